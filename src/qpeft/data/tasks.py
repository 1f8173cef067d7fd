"""Data sources by name: the built-in arithmetic word problems, and files / directories in
the supported formats (detected from their content)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from qpeft.data.formats import DataError, Example, read_chat_jsonl, read_cpsycound, read_gsm8k

_NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jia", "Kofi", "Lena"]
_ITEMS = ["apples", "books", "marbles", "stickers", "coins", "pencils", "cards", "shells"]


def _problem(rng: random.Random, level: int) -> tuple[str, str, int]:
    """(question, worked solution ending '#### N', N) with ``level`` operations."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(5, 40)
    sentences = [f"{name} has {value} {item}."]
    steps = []
    for _ in range(level):
        op = rng.choice(["add", "sub", "mul"] if level > 1 else ["add", "sub"])
        if op == "add":
            k = rng.randint(2, 30)
            sentences.append(f"Then {name} gets {k} more.")
            steps.append(f"{value} + {k} = {value + k}")
            value += k
        elif op == "sub" and value > 2:
            k = rng.randint(1, value - 1)
            sentences.append(f"Then {name} gives away {k}.")
            steps.append(f"{value} - {k} = {value - k}")
            value -= k
        else:
            k = rng.randint(2, 4)
            sentences.append(f"Then the number of {item} is multiplied by {k}.")
            steps.append(f"{value} * {k} = {value * k}")
            value *= k
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    return question, "\n".join(steps) + f"\n#### {value}", value


def arithmetic_task(n: int = 2000, level: int = 2, seed: int = 0) -> list[Example]:
    """Seeded multi-step arithmetic word problems (``level`` = operations per problem)."""
    if level < 1:
        raise ValueError(f"arithmetic `level` must be >= 1, got {level}")
    rng = random.Random(f"arithmetic-{level}-{seed}")
    out = []
    for k in range(n):
        question, solution, value = _problem(rng, level)
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": solution}]
        out.append(Example(messages, str(value), source=f"arithmetic:{level}#{k}"))
    return out


def train_test_split(examples: list[Example], test_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic seeded split (the same seed and data give the same split)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(examples) * test_fraction))
    test = [examples[i] for i in sorted(order[:n_test])]
    train = [examples[i] for i in sorted(order[n_test:])]
    return train, test


def _detect_jsonl(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return "chat"  # let the chat reader report the line
            return "gsm8k" if isinstance(record, dict) and "question" in record else "chat"
    raise DataError(f"{path} is empty")


def load_examples(spec: str) -> list[Example]:
    """``arithmetic`` / ``arithmetic:LEVEL`` (built-in, 2000 problems), a ``.jsonl`` file
    (chat messages or GSM8K, detected), or a directory / ``.txt`` file of CPsyCounD dialogues."""
    if spec == "arithmetic" or spec.startswith("arithmetic:"):
        level = spec.partition(":")[2]
        if level and not level.isdigit():
            raise ValueError(f"arithmetic level must be a number, e.g. arithmetic:2, got {spec!r}")
        return arithmetic_task(level=int(level) if level else 2)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data {spec!r} is neither the built-in 'arithmetic' task nor an existing path "
            f"(.jsonl chat or GSM8K file, or a CPsyCounD directory)"
        )
    if path.is_dir() or path.suffix == ".txt":
        return read_cpsycound(path)
    if path.suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: unsupported data file type {path.suffix!r}; use .jsonl or a CPsyCounD directory")
    return read_gsm8k(path) if _detect_jsonl(path) == "gsm8k" else read_chat_jsonl(path)
