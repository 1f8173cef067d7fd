"""The run split shared by `qpeft train` and `qpeft eval`: seeded, limited by max_examples
before the split, and held-out examples never equal (by content) a training example."""

import json

import pytest

from qpeft.data import example_key, load_examples, overlap, run_split


def _write_chat(path, questions):
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]}) + "\n"
            for q in questions
        )
    )
    return str(path)


def test_split_partitions_the_first_max_examples():
    train, held_out = run_split("arithmetic:2", seed=5, val_fraction=0.25, max_examples=40)
    first = [e.source for e in load_examples("arithmetic:2")[:40]]
    assert sorted(e.source for e in train + held_out) == sorted(first)  # no duplicates among these 40
    assert len(held_out) == 10 and not {e.source for e in train} & {e.source for e in held_out}
    again = run_split("arithmetic:2", seed=5, val_fraction=0.25, max_examples=40)
    assert [e.source for e in again[1]] == [e.source for e in held_out]
    other = run_split("arithmetic:2", seed=6, val_fraction=0.25, max_examples=40)
    assert [e.source for e in other[1]] != [e.source for e in held_out]


def test_held_out_never_repeats_a_training_example(tmp_path):
    # every question occurs twice: a held-out copy of a trained question must not be evaluated
    questions = [f"question {k % 10}" for k in range(20)]
    data = _write_chat(tmp_path / "dup.jsonl", questions)
    train, held_out = run_split(data, seed=0, val_fraction=0.5)
    trained = {e.messages[0]["content"] for e in train}
    assert held_out and not trained & {e.messages[0]["content"] for e in held_out}
    assert len(train) == 10  # the training part is the seeded split's, duplicates and all
    # what was dropped is exactly the held-out copies of trained questions
    assert len(held_out) == sum(questions.count(q) for q in set(questions) - trained)
    assert overlap(held_out, train) == 0 and overlap(train, train) == len(train)


def test_example_key_compares_content_not_source(tmp_path):
    a = load_examples(_write_chat(tmp_path / "a.jsonl", ["x", "y"]))
    b = load_examples(_write_chat(tmp_path / "b.jsonl", ["y"]))
    assert a[1].source != b[0].source and example_key(a[1]) == example_key(b[0])
    assert example_key(a[0]) != example_key(b[0])


def test_split_errors(tmp_path):
    with pytest.raises(ValueError, match="has 1 example\\(s\\); need at least 2"):
        run_split("arithmetic", seed=0, val_fraction=0.1, max_examples=1)
    data = _write_chat(tmp_path / "same.jsonl", ["same"] * 4)
    with pytest.raises(ValueError, match="every held-out example also occurs among the training examples"):
        run_split(data, seed=0, val_fraction=0.25)
