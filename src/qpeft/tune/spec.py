"""What a search varies and how: :class:`TuneSpec` (the ``--tune-*`` flags are its fields) and
:func:`apply_params`, which sets a trial's values on a :class:`qpeft.train.TrainConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qpeft.adapters.config import doc
from qpeft.train import TrainConfig

SEARCHES = ("grid", "optuna")
DEFAULT_LRS = (5e-4, 2e-3, 8e-3, 3.2e-2)
#: TrainConfig fields a search may not vary: they define the run, its data or its bookkeeping
NOT_SEARCHABLE = {
    "lr",
    "steps",
    "seed",
    "out",
    "model",
    "data",
    "method",
    "resume",
    "progress",
    "max_examples",
    "val_fraction",
    "eval_examples",
    "eval_steps",
    "save_steps",
}


@dataclass
class TuneSpec:
    """How each method's values are searched; the ``--tune-*`` flags are these fields."""

    search: str = doc(
        "grid",
        "grid: every --tune-lrs value (times every --tune-field value); optuna: TPE samples --tune-trials "
        "points in the log range of --tune-lrs",
    )
    lrs: list = doc(list(DEFAULT_LRS), "learning rates: the grid, or the ends of optuna's log-uniform range")
    fields: dict = doc(
        {}, "other fields searched with lr: a TrainConfig field (weight_decay) or adapter.NAME -> list of values"
    )
    trials: int = doc(8, "optuna: sampled trials per method (the grid runs every point)")
    steps: int | None = doc(None, "optimizer steps of each tuning run (default: the main runs' steps)")
    val_examples: int = doc(64, "validation examples carved from the training examples (never the held-out ones)")
    seed: int | None = doc(None, "seed of the tuning runs and their validation split (default: the first main seed)")
    extend: int = doc(2, "a best lr at the edge of the values tried adds one a step beyond it, at most this often")
    lr_step: float | None = doc(None, "factor of one extension step (default: the grid's spacing, 4 for the default)")
    prune: bool = doc(True, "stop a run whose validation loss is worse than the finished runs' median (MedianPruner)")
    reports: int = doc(4, "validation evaluations per tuning run: the points where a run can be pruned")

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"`search` must be one of {SEARCHES}, got {self.search!r}")
        lrs = list(self.lrs)
        if len(lrs) < 2 or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in lrs):
            raise ValueError(f"`lrs` must be two or more positive learning rates (e.g. 5e-4,2e-3,8e-3), got {lrs!r}")
        self.lrs = sorted(float(v) for v in lrs)
        if len(set(self.lrs)) < len(self.lrs):
            raise ValueError(f"`lrs` has a repeated value: {self.lrs}")
        for name in ("trials", "val_examples", "reports"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        steps = self.steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
            raise ValueError(f"`steps` must be a positive integer or None (the main runs' steps), got {self.steps!r}")
        if isinstance(self.extend, bool) or not isinstance(self.extend, int) or self.extend < 0:
            raise ValueError(f"`extend` must be a non-negative integer (0: never extend), got {self.extend!r}")
        if self.lr_step is not None and not (isinstance(self.lr_step, int | float) and self.lr_step > 1):
            raise ValueError(f"`lr_step` must be a factor > 1 (e.g. 4), got {self.lr_step!r}")
        for name, values in self.fields.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"tuned field {name!r} needs a non-empty list of values, got {values!r}")
            if name.startswith("adapter."):
                continue
            if name in NOT_SEARCHABLE or name not in {f.name for f in dataclasses.fields(TrainConfig)}:
                raise ValueError(
                    f"cannot search field {name!r}: name a TrainConfig field other than {sorted(NOT_SEARCHABLE)} "
                    "(lr has its own --tune-lrs) or an adapter field as adapter.NAME"
                )

    @property
    def step(self) -> float:
        """The factor of one extension step beyond an edge: ``lr_step``, else the grid's spacing
        (optuna: the spacing of a 4-point grid over its range)."""
        if self.lr_step is not None:
            return float(self.lr_step)
        points = len(self.lrs) if self.search == "grid" else 4
        return (self.lrs[-1] / self.lrs[0]) ** (1 / (points - 1))


def apply_params(config: TrainConfig, params: dict) -> TrainConfig:
    """``config`` with searched values set: ``lr``, TrainConfig fields, ``adapter.NAME`` fields."""
    adapter = dict(config.adapter)
    fields = {}
    for name, value in params.items():
        if name.startswith("adapter."):
            adapter[name.removeprefix("adapter.")] = value
        else:
            fields[name] = value
    return dataclasses.replace(config, adapter=adapter, **fields)
