"""The quality study's bookkeeping (benchmarks/quality.py, quality_cells.py): finished cells
stay valid in any checkout and are never run again; cells made with other settings are refused;
a phase tunes every method with qpeft.tune, then runs complete seeds first."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def cells(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import quality_cells

    monkeypatch.setattr(quality_cells, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(quality_cells, "RESULTS", tmp_path / "results" / "quality")
    monkeypatch.setattr(quality_cells, "RUNS_ROOT", tmp_path / "runs")
    return quality_cells


@pytest.fixture
def quality(cells):
    import quality

    return quality


def _finished(cells, cell, settings, results=None):
    target = (results or cells.RESULTS) / cell.name / "cell.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"cell": dataclasses.asdict(cell), "settings": settings, "final_train_loss": 1.5}))


def test_a_cell_made_in_another_checkout_is_reused(cells, monkeypatch):
    cell = cells.Cell("cpsycound", "lora-r8", 0, 8e-3, 40, "main")
    settings = json.loads(json.dumps(cells.cell_settings(cell)))
    settings["dataset"]["data"] = "/somewhere/else/shared/data/cpsycound/Data"  # where that checkout lived
    _finished(cells, cell, settings)
    monkeypatch.setattr("qpeft.train.train", lambda config: pytest.fail("a finished cell was trained again"))
    assert cells.run_cell(cell)["final_train_loss"] == 1.5
    assert cells.cell_settings(cell)["dataset"]["data"] == "../shared/data/cpsycound/Data"


def test_a_cell_made_with_other_settings_is_refused(cells):
    cell = cells.Cell("cpsycound", "lora-r8", 0, 8e-3, 40, "main")
    settings = json.loads(json.dumps(cells.cell_settings(cell)))
    settings["dataset"]["max_length"] = 512
    _finished(cells, cell, settings)
    with pytest.raises(ValueError, match="made with other settings"):
        cells.run_cell(cell)


def test_a_new_main_cell_reuses_the_same_run_of_the_original_study(cells, monkeypatch):
    """(arithmetic's rate check ran qtha-none at 8e-3 for every seed: a tuned phase that picks 8e-3 reuses it)"""
    check = cells.Cell("arithmetic", "qtha-none", 1, 8e-3, 40, "lrcheck")
    _finished(cells, check, cells.cell_settings(check))
    monkeypatch.setattr(
        "qpeft.train.train", lambda config: pytest.fail("a run finished in the original study ran again")
    )
    tuned = cells.RESULTS_ROOT / "quality-tuned"
    cell = dataclasses.replace(check, kind="main")
    record = cells.run_cell(cell, tuned)
    assert record["reused_from"] == "quality/arithmetic/lrcheck/qtha-none-lr0.008/seed1"
    assert json.loads((tuned / cell.name / "cell.json").read_text())["cell"] == dataclasses.asdict(cell)
    assert cells.reused_cell(dataclasses.replace(cell, lr=2e-3)) is None  # another rate is another run
    assert cells.reused_cell(dataclasses.replace(cell, steps=400)) is None


def test_the_original_schedule_runs_main_cells_then_the_rate_check_on_its_data_sets(cells, quality, monkeypatch):
    import quality_report

    best = {"lora-r8": 8e-3, "qtha-none": 3.2e-2, "qtha-weights": 8e-3}
    ran = []

    def record(cell):  # stands in for training: grid losses favour `best`, held-out losses 8e-3
        return {
            "validation_loss": abs(cell.lr - best.get(cell.method, 0.0)),
            "eval": {"eval_loss": abs(cell.lr - 8e-3)},
            "final_train_loss": 1.0,
            "seconds_per_step": 1.0,
        }

    def run_cell(cell, results=None):
        if cell not in ran:
            ran.append(cell)
        return record(cell)

    cells.RESULTS.mkdir(parents=True)
    monkeypatch.setattr(cells, "finished_cell", lambda cell, results: record(cell) if cell.kind == "grid" else None)
    monkeypatch.setattr(cells, "run_cell", run_cell)
    monkeypatch.setattr(cells, "matched_lora_rank", lambda: (2, {}))
    monkeypatch.setattr(quality_report, "write_report", lambda *args: None)
    methods = "lora-r8,qtha-none,qtha-weights,qtha-weights-wukong72"
    args = ["--phases", "original", "--datasets", "arithmetic,cpsycound", "--methods", methods]
    assert quality.main([*args, "--results-root", str(cells.RESULTS_ROOT)]) == 0
    assert not [c for c in ran if c.kind == "grid"]  # the grid is read, never run
    rest = [(c.dataset, c.kind, c.method, c.seed, c.lr) for c in ran]
    plain = ["lora-r8", "qtha-none", "qtha-weights"]
    expected = [("arithmetic", "main", m, s, best[m]) for s in cells.SEEDS for m in plain]
    # seed 0 at the other chosen rate; where it does better (qtha-none at 8e-3), seeds 1 and 2
    # too; the chip row takes qtha-weights' rate and is not checked
    expected += [("arithmetic", "lrcheck", "lora-r8", 0, 3.2e-2)]
    expected += [("arithmetic", "lrcheck", "qtha-none", s, 8e-3) for s in cells.SEEDS]
    expected += [("arithmetic", "lrcheck", "qtha-weights", 0, 3.2e-2)]
    expected += [("cpsycound", "main", m, s, best[m]) for s in cells.SEEDS for m in plain]
    expected += [(d, "main", "qtha-weights-wukong72", s, 8e-3) for d in ("arithmetic", "cpsycound") for s in (0, 1, 2)]
    assert rest == expected
    check = cells.Cell("arithmetic", "qtha-none", 0, 8e-3, 40, "lrcheck")
    assert check.name == "arithmetic/lrcheck/qtha-none-lr0.008"  # (seed 0's name predates the follow-ups)
    assert dataclasses.replace(check, seed=2).name == "arithmetic/lrcheck/qtha-none-lr0.008/seed2"


def test_a_disagreeing_full_length_check_stops_its_phase_and_the_next_goes_on(cells, quality, monkeypatch):
    import quality_report

    searched, ran = [], []

    def search(phase, method, spec, folder, commit):  # stands in for qpeft.tune: the check prefers 2e-3
        searched.append((phase.dataset, folder, method, spec.steps, tuple(spec.lrs)))
        return {"chosen": {"lr": 2e-3 if folder.startswith("tune-check") else 8e-3}}

    monkeypatch.setattr(quality, "search", search)
    monkeypatch.setattr(cells, "run_cell", lambda cell, results=None: ran.append(cell) or {})
    monkeypatch.setattr(cells, "matched_lora_rank", lambda: (2, {}))
    monkeypatch.setattr(quality_report, "write_report", lambda *args: None)
    monkeypatch.setitem(
        quality.PHASES, "long", quality.Phase("q-long", "cpsycound", ("lora-r8",), 400, 100, ("lora-r8",))
    )
    monkeypatch.setitem(quality.PHASES, "short", quality.Phase("q-short", "arithmetic", ("lora-r8",), 40, 40))
    assert quality.main(["--phases", "long,short", "--results-root", str(cells.RESULTS_ROOT)]) == 4
    assert searched == [
        ("cpsycound", "tune-100", "lora-r8", 100, tuple(cells.LR_GRID)),
        ("cpsycound", "tune-check-400", "lora-r8", 400, (2e-3, 8e-3, 3.2e-2)),  # the chosen rate and its neighbours
        ("arithmetic", "tune-40", "lora-r8", 40, tuple(cells.LR_GRID)),
    ]
    assert [(c.dataset, c.seed, c.lr) for c in ran] == [("arithmetic", s, 8e-3) for s in cells.SEEDS]


@pytest.mark.slow
def test_a_phase_tunes_every_method_then_runs_complete_seeds_first(cells, quality, monkeypatch, tmp_path):
    """quality.py on a tiny model: the product's tuner chooses each method's rate (and the short
    tuning is checked at full length), then the main cells run at those rates, seed by seed."""
    pytest.importorskip("optuna")
    from qpeft.testing import tiny_model_dir

    monkeypatch.setattr(cells, "MODEL", str(tiny_model_dir(tmp_path / "tiny")))
    monkeypatch.setattr(cells, "TUNE_VAL", 4)
    monkeypatch.setattr(cells, "LR_GRID", (1e-3, 1e-2))
    monkeypatch.setattr(cells, "SEEDS", (0, 1))
    monkeypatch.setattr(
        cells, "DATASETS", {"arithmetic": {"data": "arithmetic:1", "max_length": 64, "eval_examples": 2}}
    )
    monkeypatch.setattr(cells, "COMMON", {**cells.COMMON, "batch_size": 2, "max_examples": 48})
    monkeypatch.setitem(cells.METHODS, "lora-r8", ("lora", {"r": 2}))
    phase = quality.Phase(
        "quality-t", "arithmetic", ("lora-r8", "qtha-none"), steps=2, tune_steps=1, check=("lora-r8",)
    )
    monkeypatch.setitem(quality.PHASES, "tiny", phase)
    order = []
    run_cell = cells.run_cell
    monkeypatch.setattr(cells, "run_cell", lambda cell, results=None: order.append(cell) or run_cell(cell, results))
    args = type("Args", (), {"tune_steps": None, "commit": False, "matched": {"r": 2}})()
    machine = {"cpu": "c", "platform": "p", "python": "3"}
    results = cells.RESULTS_ROOT / "quality-t" / "arithmetic"
    try:
        quality.run_phase("tiny", phase, args, machine)
        stopped = None
    except quality.PhaseStopped as err:
        stopped = str(err)
    chosen = {m: json.loads((results / "tune-1" / m / "tune.json").read_text()) for m in phase.methods}
    for search in chosen.values():
        assert search["steps"] == 1 and search["seed"] == cells.TUNE_SEED
        assert {1e-3, 1e-2} <= {t["params"]["lr"] for t in search["trials"]}
    lr = chosen["lora-r8"]["chosen"]["lr"]
    check = json.loads((results / "tune-check-2" / "lora-r8" / "tune.json").read_text())
    assert check["steps"] == 2 and check["lrs"] == pytest.approx([lr / 10, lr, lr * 10])
    if not math.isclose(check["chosen"]["lr"], lr):  # the short tuning disagreed: nothing runs at its rates
        assert "--tune-steps 2" in stopped and order == []
        return
    assert stopped is None
    assert [(c.seed, c.method) for c in order] == [(0, "lora-r8"), (0, "qtha-none"), (1, "lora-r8"), (1, "qtha-none")]
    for cell in order:
        record = json.loads((results / cell.method / f"seed{cell.seed}" / "cell.json").read_text())
        assert record["cell"]["lr"] == chosen[cell.method]["chosen"]["lr"] and record["cell"]["steps"] == 2
    assert "main cells: 4 of 4 finished" in quality.status(["tiny"], args)


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
    monkeypatch.syspath_prepend(str(BENCHMARKS))
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
    monkeypatch.syspath_prepend(str(BENCHMARKS))
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
    monkeypatch.syspath_prepend(str(BENCHMARKS))
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


def _search(method, steps, values, chosen, pruned=(), extensions=()):
    """A finished search's tune.json (made-up losses) as qpeft.tune writes it."""
    trials = []
    for k, (lr, value) in enumerate(values.items()):
        state = "pruned" if lr in pruned else "complete"
        trials.append(
            {
                "number": k,
                "kind": "extension" if lr in [e["params"]["lr"] for e in extensions] else "grid",
                "params": {"lr": lr},
                "state": state,
                "value": value if state == "complete" else None,
                "pruned_at": steps // 2 if state == "pruned" else None,
                "intermediate": {str(steps // 2): value},
            }
        )
    return {
        "method": method,
        "steps": steps,
        "seed": 100,
        "val_examples": 64,
        "train_examples": 900,
        "lrs": sorted(values),
        "fields": {},
        "trials": trials,
        "chosen": {"lr": chosen},
        "best_value": values[chosen],
        "extensions": list(extensions),
        "at_edge": False,
        "finished": True,
    }


def test_the_tuned_report_shows_traces_rates_budgets_and_the_capacity_check(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import quality_report

    here, original = tmp_path / "quality-400", tmp_path / "quality"
    cpsy = {"dataset": "cpsycound"}
    for method, lr, losses in (("lora-r8", 2e-3, (1.00, 1.02)), ("qtha-default", 8e-3, (1.10, 1.11))):
        for seed, loss in enumerate(losses):  # made-up numbers: this checks the tables, not a result
            record = _record(method, "main", lr, loss, None, seed=seed)
            record["cell"] |= cpsy | {"steps": 400}
            (here / "cpsycound" / method / f"seed{seed}").mkdir(parents=True)
            (here / "cpsycound" / method / f"seed{seed}" / "cell.json").write_text(json.dumps(record))
            old = _record(method, "main", 8e-3, loss + 0.3, None, seed=seed)
            old["cell"] |= cpsy
            (original / "cpsycound" / method / f"seed{seed}").mkdir(parents=True)
            (original / "cpsycound" / method / f"seed{seed}" / "cell.json").write_text(json.dumps(old))
    extension = {"edge": "low", "from": 5e-4, "params": {"lr": 1.25e-4}}
    searches = {
        "tune-100/lora-r8": _search("lora", 100, {5e-4: 1.9, 2e-3: 1.5, 8e-3: 1.6, 3.2e-2: 5.0}, 2e-3, [3.2e-2]),
        "tune-100/qtha-default": _search(
            "qtha-default", 100, {1.25e-4: 2.3, 5e-4: 2.0, 2e-3: 1.7, 8e-3: 1.6}, 8e-3, extensions=[extension]
        ),
        "tune-check-400/lora-r8": _search("lora", 400, {5e-4: 1.3, 2e-3: 1.2, 8e-3: 1.25}, 2e-3),
        "tune-check-400/qtha-default": _search("qtha-default", 400, {2e-3: 1.3, 8e-3: 1.35, 3.2e-2: 4.0}, 2e-3),
    }
    for where, search in searches.items():
        (here / "cpsycound" / where).mkdir(parents=True)
        (here / "cpsycound" / where / "tune.json").write_text(json.dumps(search))
    phase = {"check": ["lora-r8", "qtha-default"], "steps": 400, "tune_steps": 100}
    settings = {"model": "m", "steps": 400, "tune_steps": 100, "common": {"batch_size": 4}, "lr_grid": [5e-4, 2e-3]}
    settings |= {"seeds": [0, 1], "matched_lora": {"r": 2}, "phases": {"cpsycound-400": phase}}
    settings |= {"tune": {"seed": 100, "val_examples": 64}}
    text = quality_report.write_report(here, settings, {"cpu": "c", "platform": "p", "python": "3"}).read_text()
    assert "checked at full length for lora-r8, qtha-default" in text
    # the 100-step trace: every rate tried, the pruned one with its step, the chosen one in bold
    assert "| lora-r8 | – | 1.9000 | **1.5000** | 1.6000 | pruned at 50: 5.0000 | 0.002 |" in text
    assert "qtha-default: the best rate 0.0005 was at the low edge; 0.000125 was added" in text
    # the full-length check: lora-r8 agrees, qtha-default does not
    assert "| lora-r8 | 1.3000 | **1.2000** | 1.2500 | – | 0.002 | yes (0.002 at the short budget) |" in text
    assert "| qtha-default | – | **1.3000** | 1.3500 | 4.0000 | 0.002 | NO (0.008 at the short budget) |" in text
    # the main table says which rate each row used
    assert "| lora-r8 | 0.002 | 2 |" in text and "| qtha-default | 0.008 | 2 |" in text
    # 40 steps (original) beside 400 steps
    assert "| lora-r8 | 0.008 | 1.3100 +- 0.0141 | +0.0 % | 1 | 0.002 | 1.0100 +- 0.0141 | +0.0 % | 1 |" in text
    assert "| qtha-default | 0.008 | 1.4050 +- 0.0071 | +7.3 % | 2 | 0.008 | 1.1050 +- 0.0071 | +9.4 % | 2 |" in text
    summary = json.loads((here / "summary.json").read_text())["datasets"]["cpsycound"]
    assert summary["tuning"]["tune-check-400"]["qtha-default"]["agrees"] is False
    assert summary["tuning"]["tune-100"]["lora-r8"]["pruned"] == {"0.032": 50}
    assert summary["budgets"]["methods"]["qtha-default"]["heldout_loss"]["this"]["lr"] == 8e-3


def test_the_capacity_check_pairs_each_circuit_with_its_mlp(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import quality_report

    losses = {  # made-up numbers: this checks the table, not a result
        "qtha-default": (0.12, 0.13),
        "qtha-mlp": (0.10, 0.10),
        "qtha-angle": (0.11, 0.15),
        "qtha-mlp-angle": (0.10, 0.11),
    }
    for method, values in losses.items():
        for seed, loss in enumerate(values):
            path = tmp_path / "arithmetic" / method / f"seed{seed}"
            path.mkdir(parents=True)
            path.joinpath("cell.json").write_text(json.dumps(_record(method, "main", 8e-3, loss, 0.3, seed=seed)))
    settings = {"model": "m", "steps": 40, "tune_steps": 25, "common": {"batch_size": 4}, "lr_grid": [8e-3]}
    settings |= {"seeds": [0, 1], "matched_lora": {"r": 2}}
    text = quality_report.write_report(tmp_path, settings, {"cpu": "c", "platform": "p", "python": "3"}).read_text()
    assert "Capacity check of the quantum branch" in text
    assert "| qtha-angle | 100 | qtha-mlp-angle | 100 | heldout_loss | 2 | +0.0250 | +0.0100, +0.0400 |" in text
    assert "| qtha-default | 100 | qtha-mlp | 100 | heldout_loss | 2 | +0.0250 | +0.0200, +0.0300 |" in text
    capacity = json.loads((tmp_path / "summary.json").read_text())["datasets"]["arithmetic"]["capacity"]
    assert capacity["qtha-angle - qtha-default"]["heldout_loss"]["diffs"] == pytest.approx([-0.01, 0.02])


def test_a_long_cell_cut_off_continues_from_its_checkpoint_to_the_uninterrupted_result(cells, monkeypatch, tmp_path):
    """A session's end kills the study mid-cell; a long cell keeps a checkpoint, and the next
    launch continues from it (saying so in the cell's record), to the losses of a cell that ran
    through. One whose checkpoint was made with other settings starts again."""
    from transformers import TrainerCallback

    import qpeft.train
    from qpeft.testing import tiny_model_dir

    monkeypatch.setattr(cells, "MODEL", str(tiny_model_dir(tmp_path / "tiny")))
    monkeypatch.setattr(
        cells, "DATASETS", {"arithmetic": {"data": "arithmetic:1", "max_length": 64, "eval_examples": 2}}
    )
    monkeypatch.setattr(cells, "COMMON", {**cells.COMMON, "batch_size": 2, "max_examples": 48})
    monkeypatch.setitem(cells.METHODS, "lora-r8", ("lora", {"r": 2}))
    monkeypatch.setattr(cells, "RESUME_AFTER", 4)
    monkeypatch.setattr(cells, "RESUME_EVERY", 2)
    cell = cells.Cell("arithmetic", "lora-r8", 0, 1e-2, 5, "main")
    # (a tuner's search records its runs' settings and resumes by its own storage: its runs are unchanged)
    search = cells.train_config(dataclasses.replace(cell, kind="tune"), tmp_path / "search")
    assert (search.save_steps, search.save_total_limit) == (cells.COMMON["save_steps"], None)
    through = cells.run_cell(cell, cells.RESULTS_ROOT / "through")
    assert "resumed_from_step" not in through

    class CutOff(TrainerCallback):  # (the kill, after step 3: the newest checkpoint is step 2's)
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 3

    train = qpeft.train.train
    monkeypatch.setattr(qpeft.train, "train", lambda config: train(config, callbacks=[CutOff()]))
    with pytest.raises(RuntimeError, match="interrupted"):
        cells.run_cell(cell, cells.RESULTS_ROOT / "cut")
    monkeypatch.setattr(qpeft.train, "train", train)
    resumed = cells.run_cell(cell, cells.RESULTS_ROOT / "cut")
    assert resumed["resumed_from_step"] == 2
    assert [s for s, _ in resumed["losses"]] == [s for s, _ in through["losses"]] == [1, 2, 3, 4, 5]
    assert [v for _, v in resumed["losses"]] == pytest.approx([v for _, v in through["losses"]], rel=1e-5)
    assert resumed["eval"]["eval_loss"] == pytest.approx(through["eval"]["eval_loss"], rel=1e-5)

    # a checkpoint of other settings: deleted, the cell runs from its start
    out = cells.RUNS_ROOT / "other" / cell.name
    monkeypatch.setattr(qpeft.train, "train", lambda config: train(config, callbacks=[CutOff()]))
    with pytest.raises(RuntimeError, match="interrupted"):
        cells.run_cell(cell, cells.RESULTS_ROOT / "other")
    monkeypatch.setattr(qpeft.train, "train", train)
    saved = json.loads((out / "checkpoint-2" / "train_config.json").read_text())
    (out / "checkpoint-2" / "train_config.json").write_text(json.dumps({**saved, "lr": 0.5}))
    (out / "train_config.json").write_text(json.dumps({**saved, "lr": 0.5}))
    again = cells.run_cell(cell, cells.RESULTS_ROOT / "other")
    assert "resumed_from_step" not in again
    assert [v for _, v in again["losses"]] == pytest.approx([v for _, v in through["losses"]], rel=1e-5)
