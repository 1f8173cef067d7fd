"""A training run's directory: where a run starts, continues or refuses to.

A run directory holds ``train_config.json`` (the settings of the run that last started there),
``checkpoint-N/`` directories (each with the ``train_config.json`` that saved it),
``metrics.jsonl`` (one record per log line), and after training ``adapter/``, ``results.json``
and ``samples.jsonl``. :func:`start_point` decides what a new training call in a directory does:

* an empty or new directory: start at step 0;
* ``overwrite``: delete the earlier run's files, then start at step 0;
* ``resume``: continue from the newest checkpoint, whatever settings saved it (the caller
  chose the settings, e.g. more steps);
* the same settings as the run found there (a rerun of the same command): continue from its
  newest checkpoint, or, when that run finished, reuse its results;
* other settings: refuse, naming ``--resume`` and ``--overwrite``, so a checkpoint is never
  overwritten and ``metrics.jsonl`` never mixes two runs.

A run continues from step k of a checkpoint; the records of ``metrics.jsonl`` logged after
step k (steps that ran after the last checkpoint and will run again) move to
``metrics.abandoned.jsonl``, so ``metrics.jsonl`` holds the one history of the run.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
ABANDONED_FILE = "metrics.abandoned.jsonl"
RESULTS_FILE = "results.json"
#: what a run writes besides its checkpoints (``--overwrite`` deletes these; never ``jobs/``,
#: the QPU job ledger, which a later run re-attaches to instead of paying for a job again)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, ABANDONED_FILE, RESULTS_FILE, "samples.jsonl", "adapter")
#: settings that do not change what a run computes: a rerun that differs only in them is the same run
NOT_SETTINGS = ("resume", "progress", "report_to", "max_spend")


def latest_checkpoint(out: str | Path) -> Path | None:
    """The ``checkpoint-N`` directory of ``out`` with the largest N, or None."""
    checkpoints = [p for p in Path(out).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=checkpoint_step, default=None)


def checkpoint_step(checkpoint: Path) -> int:
    """N of a ``checkpoint-N`` directory."""
    return int(checkpoint.name.split("-")[-1])


def recorded_settings(out: str | Path) -> dict | None:
    """The settings of the run in ``out``: those that saved its newest checkpoint, else those it
    started with; None when neither file exists."""
    checkpoint = latest_checkpoint(out)
    for path in ([checkpoint / CONFIG_FILE] if checkpoint else []) + [Path(out) / CONFIG_FILE]:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); the run directory is damaged") from err
    return None


def differences(recorded: dict, settings: dict) -> dict[str, tuple]:
    """{field: (recorded value, new value)} of the fields that differ (``NOT_SETTINGS`` aside)."""
    keys = (set(recorded) | set(settings)) - set(NOT_SETTINGS)
    return {k: (recorded.get(k), settings.get(k)) for k in sorted(keys) if recorded.get(k) != settings.get(k)}


@dataclass(frozen=True)
class RunStart:
    """What a training call in a run directory does (see the module docstring)."""

    #: continue from this checkpoint; None: start at step 0
    checkpoint: Path | None = None
    #: results.json of the same, finished run: nothing to train
    finished: dict | None = None
    #: delete the earlier run's files before starting
    overwrite: bool = False

    @property
    def step(self) -> int:
        """The step training starts after."""
        return checkpoint_step(self.checkpoint) if self.checkpoint else 0


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds files of a training run."""
    return latest_checkpoint(out) is not None or any((out / name).exists() for name in RUN_FILES)


def start_point(out: str | Path, settings: dict, resume: bool = False, overwrite: bool = False) -> RunStart:
    """Decide how a training call with ``settings`` (a TrainConfig as a dict) starts in ``out``;
    changes nothing on disk (:func:`prepare` does).

    Raises ValueError for ``resume`` together with ``overwrite`` and where ``out`` holds a run of
    other settings, FileNotFoundError for ``resume`` without a checkpoint.
    """
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: choose one")
    if overwrite:
        return RunStart(overwrite=holds_run(out))
    checkpoint = latest_checkpoint(out)
    if resume:
        if checkpoint is None:
            raise FileNotFoundError(f"--resume: no checkpoint-* directory in {out}; start the run without --resume")
        return RunStart(checkpoint)
    if not holds_run(out):
        return RunStart()
    recorded = recorded_settings(out)
    changed = differences(recorded, settings) if recorded is not None else None
    if changed == {}:
        results = out / RESULTS_FILE
        previous = json.loads(results.read_text()) if results.is_file() else {}
        if previous.get("finished") and not differences(previous.get("config") or {}, settings):
            return RunStart(finished=previous)
        return RunStart(checkpoint)
    where = f"checkpoint-{checkpoint_step(checkpoint)}" if checkpoint else "the files"
    what = (
        "settings that are not recorded"
        if changed is None
        else "other settings ("
        + ", ".join(f"{k} {json.dumps(old)} -> {json.dumps(new)}" for k, (old, new) in list(changed.items())[:4])
        + (", ..." if len(changed) > 4 else "")
        + ")"
    )
    raise ValueError(
        f"{out} holds {where} of a run with {what}; continue that run with --resume (flags given then "
        f"override its settings), start over with --overwrite (deletes its checkpoints and metrics), "
        f"or choose another --out"
    )


def prepare(out: str | Path, start: RunStart) -> None:
    """Make ``out`` ready for ``start`` (main process only): delete the earlier run's files for
    ``overwrite``, and move the records that ``metrics.jsonl`` holds past the starting step to
    ``metrics.abandoned.jsonl``."""
    out = Path(out)
    if start.overwrite:
        for path in [*out.glob("checkpoint-*"), *(out / name for name in RUN_FILES)]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        logger.info("qpeft: deleted the earlier run in %s (--overwrite)", out)
    metrics = out / METRICS_FILE
    if not metrics.is_file():
        return
    keep, abandoned = [], []
    for line in metrics.read_text().splitlines(keepends=True):
        (keep if _logged_step(line) <= start.step else abandoned).append(line)
    if not abandoned:
        return
    with open(out / ABANDONED_FILE, "a") as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for line in abandoned)  # one record a line
    tmp = metrics.with_name(f".{METRICS_FILE}.tmp")
    tmp.write_text("".join(keep))
    tmp.replace(metrics)
    logger.info(
        "qpeft: %d records of %s logged after step %d moved to %s", len(abandoned), metrics, start.step, ABANDONED_FILE
    )


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl record; infinity for a line a crash cut short (never kept)."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return float("inf")
