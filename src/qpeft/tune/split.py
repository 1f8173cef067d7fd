"""The examples a search trains and scores on: a validation split carved from the examples in
the training part of every main seed's :func:`qpeft.data.run_split` (never a held-out one)."""

from __future__ import annotations

import dataclasses
import random

from qpeft.data import Example, example_key, run_split
from qpeft.train import TrainConfig


def tuning_examples(
    config: TrainConfig, seeds: list[int], val_examples: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """(tuning-run training examples, validation examples) for runs of ``config`` with ``seeds``.

    Both come from the examples in the training part of ``run_split`` for every seed in
    ``seeds``; ``val_examples`` of them (at most a quarter) form the validation split, drawn
    with ``seed``. Validation examples lose their reference answers (they are scored by loss).
    Raises ``ValueError`` when too few examples are left to split.
    """
    if not seeds:
        raise ValueError("tuning needs the seeds of the main runs (their held-out examples are left out)")
    parts = [run_split(config.data, s, config.val_fraction, config.max_examples)[0] for s in seeds]
    common = set.intersection(*({example_key(e) for e in part} for part in parts))
    pool = [e for e in parts[0] if example_key(e) in common]
    n_val = min(val_examples, len(pool) // 4)
    if n_val < 1:
        raise ValueError(
            f"data {config.data!r}: {len(pool)} example(s) are in the training part of every seed {seeds}; "
            "tuning needs at least 4 (use more data or fewer seeds)"
        )
    picked = set(random.Random(f"qpeft-tune-{seed}").sample(range(len(pool)), n_val))
    train_part = [e for i, e in enumerate(pool) if i not in picked]
    seen = {example_key(e) for e in train_part}
    val = [
        dataclasses.replace(pool[i], answer=None)
        for i in sorted(picked)
        if example_key(pool[i]) not in seen  # a duplicate of a tuning-run example scores nothing
    ]
    if not val:
        raise ValueError(f"data {config.data!r}: every validation example duplicates a training example")
    return train_part, val
