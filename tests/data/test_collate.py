"""Chat template, assistant-only loss, truncation by whole leading turns."""

import torch

from qpeft.data import Collator, EncodedDataset, Example, encode_example
from qpeft.data.collate import IGNORE, encode_conversation
from qpeft.testing import tiny_tokenizer


def _turns(n):
    msgs = []
    for k in range(n):
        msgs += [
            {"role": "user", "content": f"question {k}"},
            {"role": "assistant", "content": f"answer {k}"},
        ]
    return msgs


def test_loss_only_on_assistant_tokens():
    tok = tiny_tokenizer()
    ids, labels = encode_conversation(tok, _turns(2))
    learned = tok.decode([t for t in labels if t != IGNORE])
    assert learned == "answer 0<|im_end|>\nanswer 1<|im_end|>\n"
    assert "question" not in learned
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels))


def test_truncation_drops_whole_leading_turns_first():
    tok = tiny_tokenizer()
    example = Example(_turns(4))
    full, _ = encode_conversation(tok, example.messages)
    one_exchange = len(encode_conversation(tok, _turns(1))[0])
    enc = encode_example(tok, example, max_length=len(full) - 1)
    text = tok.decode(enc["input_ids"])
    assert text.startswith("<|im_start|>user\nquestion 1") and "question 0" not in text  # a whole turn went
    enc = encode_example(tok, example, max_length=one_exchange + 3)
    assert tok.decode(enc["input_ids"]).startswith("<|im_start|>user\nquestion 3")
    enc = encode_example(tok, example, max_length=12)  # the last exchange alone is too long: cut its start
    assert len(enc["input_ids"]) == 12 and tok.decode(enc["input_ids"]).endswith("answer 3<|im_end|>\n")


def test_system_message_is_kept_when_turns_are_dropped():
    tok = tiny_tokenizer()
    example = Example([{"role": "system", "content": "sys"}] + _turns(3))
    enc = encode_example(tok, example, max_length=60)
    text = tok.decode(enc["input_ids"])
    assert text.startswith("<|im_start|>system\nsys") and "question 0" not in text


def test_collator_pads_right():
    tok = tiny_tokenizer()
    data = EncodedDataset(tok, [Example(_turns(1)), Example(_turns(2))], max_length=200)
    batch = Collator(tok.pad_token_id)([data[0], data[1]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    n0 = len(data[0]["input_ids"])
    assert (batch["input_ids"][0, n0:] == tok.pad_token_id).all() and (batch["labels"][0, n0:] == IGNORE).all()
    assert batch["attention_mask"][0].sum() == n0 and batch["attention_mask"].dtype == torch.long


def _reference_truncation(tok, example, max_length):
    """Drop whole leading exchanges one at a time until the conversation fits (the plain rule)."""
    from qpeft.data.collate import _exchanges

    system, exchanges = _exchanges(example.messages)
    while True:
        ids, labels = encode_conversation(tok, system + [m for ex in exchanges for m in ex])
        if len(ids) <= max_length or len(exchanges) == 1:
            break
        exchanges = exchanges[1:]
    if len(ids) > max_length:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return {"input_ids": ids, "labels": labels}


def test_bisected_truncation_equals_dropping_one_exchange_at_a_time():
    import random

    tok = tiny_tokenizer()
    rng = random.Random(0)
    for _ in range(40):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": "sys " * rng.randint(1, 5)})
        for k in range(rng.randint(1, 9)):
            messages += [
                {"role": "user", "content": f"q{k} " * rng.randint(1, 12)},
                {"role": "assistant", "content": f"a{k} " * rng.randint(1, 12)},
            ]
        example = Example(messages)
        full = len(encode_conversation(tok, messages)[0])
        for max_length in (8, 20, full // 3 + 1, full // 2 + 1, full - 1, full, full + 5):
            assert encode_example(tok, example, max(8, max_length)) == _reference_truncation(
                tok, example, max(8, max_length)
            )
