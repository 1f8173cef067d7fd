"""The quality study's cells (see ``quality.py``, which schedules them): the methods, data
sets and shared settings; one cell = one method x seed x data set x rate, trained once, written
under ``benchmarks/results/`` at once and never run again; a cell made with other settings is
an error."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS_ROOT = ROOT / "benchmarks" / "results"
RESULTS = RESULTS_ROOT / "quality"  # the original 40-step study
RUNS_ROOT = ROOT / "runs"

MODEL = "smollm2-135m"
SEEDS = (0, 1, 2)
TUNE_SEED = 100
TUNE_DATASET = "cpsycound"  # the original study's tuning data set (its rates are fixed for every data set)
LR_GRID = (5e-4, 2e-3, 8e-3, 3.2e-2)  # 3.2e-2 added: the best short-run rate sat at 8e-3, the top edge
TUNE_VAL = 64  # validation examples of the tuner (carved from the training examples)
REFERENCE = "lora-r8"
MATCHED = "lora-matched"
WUKONG = "qtha-weights-wukong72"
SIX = (REFERENCE, MATCHED, "qtha-default", "qtha-weights", "qtha-mlp", "qtha-none")

#: study method -> (qpeft preset, adapter overrides); the matched LoRA's r is filled in at start.
METHODS: dict[str, tuple[str, dict]] = {
    REFERENCE: ("lora", {}),
    MATCHED: ("lora", {}),
    "qtha-default": ("qtha-default", {}),
    "qtha-weights": ("qtha-weights", {}),
    "qtha-none": ("qtha-none", {}),
    "qtha-mlp": ("qtha-mlp", {}),
    # the hardware mode with its circuits on the emulated Origin Wukong chip (qpeft.devices):
    # transpiled to the 12 x 6 grid, calibrated noise, 1024 shots; gradient from the exact
    # simulator at the same angles (diff_method="hybrid", the cheap QPU mode)
    WUKONG: ("qtha-weights", {"backend": "noisy", "noise": "wukong72", "shots": 1024, "diff_method": "hybrid"}),
    # the capacity check: a larger circuit, and a classical MLP branch of each circuit's size
    "qtha-angle": ("qtha-angle", {}),
    "qtha-mlp-angle": ("qtha-mlp", {"encoding": "angle"}),
    "qtha-deep": ("qtha-default", {"qnn_layers": 4}),
    "qtha-mlp-deep": ("qtha-mlp", {"qnn_layers": 4}),
}
#: (original study) data sets where seed 0 of every method also runs at the other chosen rates
LR_CHECK = ("arithmetic",)
#: (original study) methods that take another method's tuned learning rate
LR_FROM = {WUKONG: "qtha-weights"}

#: per data set: the training settings every method shares.
DATASETS = {
    "cpsycound": {"data": str(SHARED / "cpsycound" / "Data"), "max_length": 256, "eval_examples": 200},
    "arithmetic": {"data": "arithmetic", "max_length": 160, "eval_examples": 100},
    "gsm8k": {"data": str(SHARED / "gsm8k" / "train.jsonl"), "max_length": 320, "eval_examples": 16},
}
GSM8K_TEST = SHARED / "gsm8k" / "test.jsonl"
GSM8K_TEST_LOSS, GSM8K_TEST_ACCURACY, GSM8K_NEW_TOKENS = 200, 100, 256
#: seconds per step on a quiet machine (RESULTS.md), for the estimates of --status
SECONDS_PER_STEP = {"cpsycound": 4.4, "arithmetic": 2.2, "gsm8k": 5.0}

COMMON = {"batch_size": 4, "val_fraction": 0.1, "warmup_steps": 0, "save_steps": 10_000, "progress": False}
#: a cell this long keeps a checkpoint every RESUME_EVERY steps (the newest only), so a cell cut
#: off (a session's end kills the study) continues from it; shorter ones start again. A resumed run
#: reaches the weights of an uninterrupted one (qpeft.train; tests/test_resume.py), so this is not
#: a setting the results depend on (not in COMMON, not in a cell's settings)
RESUME_AFTER, RESUME_EVERY = 200, 50

logger = logging.getLogger("quality")


@dataclasses.dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    seed: int
    lr: float
    steps: int
    kind: str  # "grid", "main" or "lrcheck" (the original study's grid and rate check)

    @property
    def name(self) -> str:
        if self.kind == "grid":
            return f"{self.dataset}/grid/{self.method}-lr{self.lr:g}"
        if self.kind == "lrcheck":
            return f"{self.dataset}/lrcheck/{self.method}-lr{self.lr:g}" + (f"/seed{self.seed}" if self.seed else "")
        return f"{self.dataset}/{self.method}/seed{self.seed}"


def matched_lora_rank() -> tuple[int, dict]:
    """The LoRA rank (q, v) whose parameter count is closest to qtha-default's on the model."""
    from qpeft.adapters import get_model
    from qpeft.models import load_model

    base, _ = load_model(MODEL)
    qtha = get_model(base, "qtha-default").parameter_summary()
    per_rank = qtha["lora_equivalent"] / 8  # LoRA r=8 on the same targets -> per unit of r
    rank = max(1, round(qtha["trainable"] / per_rank))
    return rank, {"qtha_default_params": qtha["trainable"], "lora_params_per_rank": per_rank}


def train_config(cell: Cell, out: Path):
    from qpeft.train import TrainConfig

    preset, overrides = METHODS[cell.method]
    settings = DATASETS[cell.dataset]
    return TrainConfig(
        model=MODEL,
        data=settings["data"],
        method=preset,
        adapter=dict(overrides),
        out=str(out),
        steps=cell.steps,
        lr=cell.lr,
        max_length=settings["max_length"],
        # grid cells: validation loss only (computed in run_cell), no accuracy generation
        eval_examples=1 if cell.kind == "grid" else settings["eval_examples"],
        seed=cell.seed,
        logging_steps=1,
        **{**COMMON, **_checkpoints(cell)},
    )


def _checkpoints(cell: Cell) -> dict:
    """The checkpoint settings of ``cell`` (see RESUME_AFTER): main and rate-check cells only
    (a tuner's search resumes by its own study storage, and records its runs' settings)."""
    long = cell.steps >= RESUME_AFTER and cell.kind in ("main", "lrcheck")
    return {"save_steps": RESUME_EVERY, "save_total_limit": 1} if long else {}


def gsm8k_test(adapter_dir: Path, seed: int) -> dict:
    """Loss on the first GSM8K_TEST_LOSS test questions; accuracy on the first
    GSM8K_TEST_ACCURACY for seed 0 (GSM8K's own test file: disjoint from training)."""
    from qpeft.adapters import load_adapter
    from qpeft.data import load_examples
    from qpeft.evaluate import evaluate_loss, math_accuracy
    from qpeft.models import load_model

    base, tokenizer = load_model(MODEL)
    model = load_adapter(base, adapter_dir)
    test = load_examples(str(GSM8K_TEST))
    result = {"test_loss": evaluate_loss(model, tokenizer, test[:GSM8K_TEST_LOSS], 320)["eval_loss"]}
    result["test_loss_examples"] = GSM8K_TEST_LOSS
    if seed == 0:
        accuracy, records = math_accuracy(model, tokenizer, test[:GSM8K_TEST_ACCURACY], GSM8K_NEW_TOKENS)
        result.update(test_accuracy=accuracy, test_accuracy_examples=len(records), test_samples=records[:5])
    return result


def cell_settings(cell: Cell) -> dict:
    """What a cell's result depends on (besides the cell itself): a cell stays valid when
    methods or data sets are added to the study, and in any checkout (see :func:`portable`)."""
    return portable(
        {
            "model": MODEL,
            "method": list(METHODS[cell.method]),
            "dataset": DATASETS[cell.dataset],
            "common": COMMON,
        }
    )


def portable(value):
    """``value`` with the shared data folder written as ``../shared/data/...`` wherever the
    checkout that ran it lives (cells made in another clone or worktree stay valid)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and "/shared/data/" in value:
        return "../shared/data/" + value.split("/shared/data/", 1)[1]
    return value


def finished_cell(cell: Cell, results: Path) -> dict | None:
    """The record of a finished cell (None if it is not finished); raises ValueError when it
    was made with other settings."""
    target = results / cell.name / "cell.json"
    if not target.is_file():
        return None
    done = json.loads(target.read_text())
    if portable(done["settings"]) != cell_settings(cell) or done["cell"] != dataclasses.asdict(cell):
        raise ValueError(
            f"{target} was made with other settings ({done['settings']} / {done['cell']}); "
            f"use another results directory instead of mixing settings"
        )
    return done


def reused_cell(cell: Cell) -> dict | None:
    """A finished cell of the original study with this cell's settings, rate, seed and steps
    (a main cell there, or a rate-check cell at this rate), as this cell's record."""
    for kind in ("main", "lrcheck"):
        source = dataclasses.replace(cell, kind=kind)
        path = RESULTS / source.name / "cell.json"
        if path.is_file():
            record = json.loads(path.read_text())
            if record["cell"] == dataclasses.asdict(source) and portable(record["settings"]) == cell_settings(cell):
                return {**record, "cell": dataclasses.asdict(cell), "reused_from": f"quality/{source.name}"}
    return None


def run_cell(cell: Cell, results: Path | None = None) -> dict:
    """The record of ``cell`` in ``results``: finished there, reused from the original study,
    or trained now (and written there at once)."""
    from qpeft.train import train

    results = RESULTS if results is None else results
    done = finished_cell(cell, results)
    if done is not None:
        return done
    target = results / cell.name / "cell.json"
    record = reused_cell(cell) if results != RESULTS else None
    if record is not None:
        logger.info("[study] cell %s: the same run is finished in %s; reused", cell.name, record["reused_from"])
    else:
        out = RUNS_ROOT / results.name / cell.name
        resumed = _resume_point(cell, out)
        estimate = (cell.steps - resumed) * SECONDS_PER_STEP.get(cell.dataset, 4.0) / 60
        logger.info(
            "[study] cell %s: lr %g, %d steps%s (about %.0f min on a quiet machine)",
            cell.name,
            cell.lr,
            cell.steps,
            f", continuing from the checkpoint of step {resumed}" if resumed else "",
            estimate,
        )
        summary = train(train_config(cell, out))
        if not summary.get("finished"):
            raise RuntimeError(f"cell {cell.name} was interrupted; run the study again to redo it")
        record = {
            "cell": dataclasses.asdict(cell),
            "settings": cell_settings(cell),
            "parameters": summary["parameters"],
            "final_train_loss": summary["final_train_loss"],
            "losses": summary["losses"],
            "seconds_per_step": summary["seconds_per_step"],
            "train_seconds": summary["train_seconds"],
            "eval": summary["eval"],
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if resumed:  # (train_seconds and seconds_per_step are of the part after it)
            record["resumed_from_step"] = resumed
        if cell.dataset == "gsm8k" and cell.kind == "main":
            record["gsm8k_test"] = gsm8k_test(out / "adapter", cell.seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        if cell.kind == "main" and cell.seed == 0:
            shutil.copytree(out / "adapter", target.parent / "adapter", dirs_exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(target)  # a cell is finished only once its whole record is on disk
    return record


def _resume_point(cell: Cell, out: Path) -> int:
    """The step an unfinished earlier attempt of ``cell`` in ``out`` continues from: its newest
    checkpoint's, when it was made with this cell's settings (:mod:`qpeft.rundir` decides, as
    for ``qpeft train``); otherwise the attempt is deleted and the cell starts again (0)."""
    from qpeft.rundir import checkpoint_step, latest_checkpoint, start_point

    checkpoint = latest_checkpoint(out) if out.exists() and _checkpoints(cell) else None
    if checkpoint is not None:
        try:
            begin = start_point(out, dataclasses.asdict(train_config(cell, out)))
            if begin.checkpoint is not None or begin.finished is not None:  # (finished: train() returns it)
                return checkpoint_step(checkpoint)
        except ValueError as err:  # made with other settings
            logger.info("[study] cell %s: the earlier attempt in %s is not resumable (%s)", cell.name, out, err)
    if out.exists():
        shutil.rmtree(out)  # an unfinished earlier attempt without a usable checkpoint: start it again
    return 0


def chosen_lr(grid: dict[float, dict]) -> float:
    """The grid point with the lowest validation loss (the original study's grid)."""
    return min(grid, key=lambda lr: grid[lr]["validation_loss"])


def commit(message: str, results: Path) -> None:
    """git-commit what changed under ``results`` (nothing to commit: no commit)."""
    subprocess.run(["git", "add", str(results)], cwd=ROOT, check=True)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=ROOT).returncode
    if staged:
        subprocess.run(["git", "commit", "-q", "-m", message], cwd=ROOT, check=True)
