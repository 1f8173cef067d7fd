"""The quality study's bookkeeping (benchmarks/quality.py): finished cells stay valid in any
checkout and are never run again; cells made with other settings are refused."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture
def quality(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("quality_study", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_study", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    return module


def _finished(quality, cell, settings):
    target = quality.RESULTS / cell.name / "cell.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"cell": dataclasses.asdict(cell), "settings": settings, "final_train_loss": 1.5}))


def test_a_cell_made_in_another_checkout_is_reused(quality, monkeypatch):
    cell = quality.Cell("cpsycound", "lora-r8", 0, 8e-3, 40, "main")
    settings = json.loads(json.dumps(quality.cell_settings(cell)))
    settings["dataset"]["data"] = "/somewhere/else/shared/data/cpsycound/Data"  # where that checkout lived
    _finished(quality, cell, settings)
    monkeypatch.setattr("qpeft.train.train", lambda config: pytest.fail("a finished cell was trained again"))
    assert quality.run_cell(cell)["final_train_loss"] == 1.5
    assert quality.cell_settings(cell)["dataset"]["data"] == "../shared/data/cpsycound/Data"


def test_a_cell_made_with_other_settings_is_refused(quality):
    cell = quality.Cell("cpsycound", "lora-r8", 0, 8e-3, 40, "main")
    settings = json.loads(json.dumps(quality.cell_settings(cell)))
    settings["dataset"]["max_length"] = 512
    _finished(quality, cell, settings)
    with pytest.raises(ValueError, match="made with other settings"):
        quality.run_cell(cell)


def test_the_schedule_runs_main_cells_then_the_rate_check_on_its_data_sets(quality, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    import quality_report

    best = {"lora-r8": 8e-3, "qtha-none": 3.2e-2, "qtha-weights": 8e-3}
    ran = []

    def run_cell(cell):  # stands in for training: grid losses favour `best`, held-out losses 8e-3
        if cell not in ran:
            ran.append(cell)
        return {
            "validation_loss": abs(cell.lr - best.get(cell.method, 0.0)),
            "eval": {"eval_loss": abs(cell.lr - 8e-3)},
            "final_train_loss": 1.0,
            "seconds_per_step": 1.0,
        }

    monkeypatch.setattr(quality, "run_cell", run_cell)
    monkeypatch.setattr(quality, "matched_lora_rank", lambda: (2, {}))
    monkeypatch.setattr(quality_report, "write_report", lambda *args: None)
    methods = "lora-r8,qtha-none,qtha-weights,qtha-weights-wukong72"
    assert quality.main(["--datasets", "arithmetic,cpsycound", "--methods", methods]) == 0
    grid = [c for c in ran if c.kind == "grid"]
    assert len(grid) == 3 * len(quality.LR_GRID) and {c.dataset for c in grid} == {"cpsycound"}
    rest = [(c.dataset, c.kind, c.method, c.seed, c.lr) for c in ran if c.kind != "grid"]
    plain = ["lora-r8", "qtha-none", "qtha-weights"]
    expected = [("arithmetic", "main", m, s, best[m]) for s in quality.SEEDS for m in plain]
    # seed 0 at the other chosen rate; where it does better (qtha-none at 8e-3), seeds 1 and 2
    # too; the chip row takes qtha-weights' rate and is not checked
    expected += [("arithmetic", "lrcheck", "lora-r8", 0, 3.2e-2)]
    expected += [("arithmetic", "lrcheck", "qtha-none", s, 8e-3) for s in quality.SEEDS]
    expected += [("arithmetic", "lrcheck", "qtha-weights", 0, 3.2e-2)]
    expected += [("cpsycound", "main", m, s, best[m]) for s in quality.SEEDS for m in plain]
    expected += [(d, "main", "qtha-weights-wukong72", s, 8e-3) for d in ("arithmetic", "cpsycound") for s in (0, 1, 2)]
    assert rest == expected
    check = quality.Cell("arithmetic", "qtha-none", 0, 8e-3, 40, "lrcheck")
    assert check.name == "arithmetic/lrcheck/qtha-none-lr0.008"  # (seed 0's name predates the follow-ups)
    assert dataclasses.replace(check, seed=2).name == "arithmetic/lrcheck/qtha-none-lr0.008/seed2"


def _record(method, kind, lr, heldout, accuracy, seed=0):
    cell = {"dataset": "arithmetic", "method": method, "seed": seed, "lr": lr, "steps": 40, "kind": kind}
    return {
        "cell": cell,
        "parameters": {"trainable": 100},
        "final_train_loss": heldout - 0.01,
        "losses": [[1, 1.0], [2, 0.5]],
        "seconds_per_step": 1.0,
        "eval": {"eval_loss": heldout, "accuracy": accuracy},
    }


def test_the_report_puts_the_rate_check_beside_the_chosen_rate(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    import quality_report

    records = {  # made-up numbers: this checks the tables, not a result
        "arithmetic/qtha-none/seed0": _record("qtha-none", "main", 0.032, 0.21, 0.09),
        "arithmetic/qtha-none/seed1": _record("qtha-none", "main", 0.032, 0.23, 0.07, seed=1),
        "arithmetic/lrcheck/qtha-none-lr0.008": _record("qtha-none", "lrcheck", 0.008, 0.12, 0.24),
        "arithmetic/lrcheck/qtha-none-lr0.008/seed1": _record("qtha-none", "lrcheck", 0.008, 0.14, 0.20, seed=1),
        "arithmetic/lora-r8/seed0": _record("lora-r8", "main", 0.008, 0.11, 0.27),
        "arithmetic/lora-r8/seed1": _record("lora-r8", "main", 0.008, 0.10, 0.30, seed=1),
    }
    for name, record in records.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "cell.json").write_text(json.dumps(record))
    settings = {"model": "m", "steps": 40, "tune_steps": 25, "common": {"batch_size": 4}, "lr_grid": [0.008, 0.032]}
    settings |= {"seeds": [0], "matched_lora": {"r": 2}}
    text = quality_report.write_report(tmp_path, settings, {"cpu": "c", "platform": "p", "python": "3"}).read_text()
    assert "| qtha-none | 0.008 | 0.1200 | 0.240 | 0.1100 |" in text
    assert "| qtha-none | 0.032 (chosen) | 0.2100 | 0.090 | 0.2000 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())["datasets"]["arithmetic"]
    assert summary["lr_check"]["qtha-none"]["0.008"]["accuracy"] == 0.24
    assert list(summary["methods"]) == ["lora-r8", "qtha-none"]  # the check is not a main cell
    assert summary["methods"]["qtha-none"]["lr"] == 0.032
    # every method at 8e-3: lora-r8's main cells, qtha-none's two check seeds, paired per seed
    shared = summary["equal_rate"]["0.008"]
    assert shared["methods"]["qtha-none"]["lr"] == 0.008 and shared["methods"]["qtha-none"]["seeds"] == [0, 1]
    assert shared["paired"]["lora-r8"]["qtha-none"]["heldout_loss"]["diffs"] == pytest.approx([0.01, 0.04])
    assert "Every method at one shared rate, lr 0.008" in text


def test_the_chip_row_is_paired_with_its_exact_twin(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    import quality_report

    records = {  # made-up numbers: this checks the table, not a result
        f"arithmetic/{method}/seed{seed}": _record(method, "main", 0.008, loss, 0.3, seed=seed)
        for method, losses in (("qtha-weights", (0.10, 0.12)), ("qtha-weights-wukong72", (0.11, 0.15)))
        for seed, loss in enumerate(losses)
    }
    for name, record in records.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "cell.json").write_text(json.dumps(record))
    settings = {"model": "m", "steps": 40, "tune_steps": 25, "common": {"batch_size": 4}, "lr_grid": [0.008]}
    settings |= {"seeds": [0, 1], "matched_lora": {"r": 2}}
    text = quality_report.write_report(tmp_path, settings, {"cpu": "c", "platform": "p", "python": "3"}).read_text()
    assert "Paired per seed against `qtha-weights`" in text
    summary = json.loads((tmp_path / "summary.json").read_text())["datasets"]["arithmetic"]
    chip = summary["paired"]["qtha-weights"]
    assert list(chip) == ["qtha-weights-wukong72"]
    assert chip["qtha-weights-wukong72"]["heldout_loss"]["diffs"] == pytest.approx([0.01, 0.03])


def test_an_accuracy_of_fewer_seeds_says_so(tmp_path, monkeypatch):
    """(GSM8K generates answers for seed 0 only: its mean is one seed's, not '+- 0')"""
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    import quality_report

    records = {}  # made-up numbers: this checks the table, not a result
    for seed, loss in enumerate((1.10, 1.20, 1.30)):
        record = _record("lora-r8", "main", 0.008, loss, 0.0, seed=seed)
        record["cell"]["dataset"] = "gsm8k"
        record["gsm8k_test"] = {"test_loss": loss - 0.05, "test_loss_examples": 200}
        if seed == 0:
            record["gsm8k_test"] |= {"test_accuracy": 0.04, "test_accuracy_examples": 100}
        records[f"gsm8k/lora-r8/seed{seed}"] = record
    for name, record in records.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "cell.json").write_text(json.dumps(record))
    settings = {"model": "m", "steps": 40, "tune_steps": 25, "common": {"batch_size": 4}, "lr_grid": [0.008]}
    settings |= {"seeds": [0, 1, 2], "matched_lora": {"r": 2}}
    text = quality_report.write_report(tmp_path, settings, {"cpu": "c", "platform": "p", "python": "3"}).read_text()
    assert "| 1.1500 +- 0.1000 | 0.040 (1 seed) | 1.00 +- 0.00 |" in text
