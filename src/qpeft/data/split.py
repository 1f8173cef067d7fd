"""The training / held-out split of a run, in one place: ``qpeft train`` trains on the first
part and evaluates on the second, and ``qpeft eval`` rebuilds the same held-out part from the
run's recorded settings, so evaluation never sees training data."""

from __future__ import annotations

import json
import logging

from qpeft.data.formats import Example
from qpeft.data.tasks import load_examples, train_test_split

logger = logging.getLogger(__name__)


def example_key(example: Example) -> str:
    """The content of an example (its messages), comparable across loads of the data."""
    return json.dumps(example.messages, ensure_ascii=False, sort_keys=True)


def run_split(
    data: str, seed: int, val_fraction: float, max_examples: int | None = None
) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out examples) of a run with these settings.

    The first ``max_examples`` examples of ``data`` are split by a seeded shuffle; held-out
    examples whose content also occurs among the training examples (duplicates in the data)
    are dropped, so the two parts never share an example.
    """
    examples = load_examples(data)
    if max_examples:
        examples = examples[:max_examples]
    if len(examples) < 2:
        raise ValueError(f"data {data!r} has {len(examples)} example(s); need at least 2 to hold one out")
    train, held_out = train_test_split(examples, val_fraction, seed)
    seen = {example_key(e) for e in train}
    disjoint = [e for e in held_out if example_key(e) not in seen]
    if len(disjoint) < len(held_out):
        logger.info(
            "data %r: %d held-out example(s) duplicate training examples; not evaluated",
            data,
            len(held_out) - len(disjoint),
        )
    if not disjoint:
        raise ValueError(
            f"data {data!r}: every held-out example also occurs among the training examples; "
            "raise `val_fraction` or use data without duplicates"
        )
    return train, disjoint


def overlap(examples: list[Example], train: list[Example]) -> int:
    """How many of ``examples`` also occur (by content) among ``train``."""
    seen = {example_key(e) for e in train}
    return sum(example_key(e) in seen for e in examples)
