"""Tokenisation with the tokenizer's chat template, loss on assistant tokens only, and
truncation that drops whole leading turns before it cuts into a turn."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qpeft.data.formats import Example

IGNORE = -100


def _ids(tokenizer, messages, add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def encode_conversation(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a whole conversation; labels are -100 except on the tokens of
    assistant turns (found by rendering each prefix: the template must be prefix-stable)."""
    ids = _ids(tokenizer, messages)
    labels = [IGNORE] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:k], add_generation_prompt=True))
        end = len(_ids(tokenizer, messages[: k + 1]))
        labels[start:end] = ids[start:end]
    return ids, labels


def _exchanges(messages):
    """Split into (system messages, [exchange, ...]); an exchange ends with an assistant turn."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest, exchanges, current = messages[len(system) :], [], []
    for m in rest:
        current.append(m)
        if m["role"] == "assistant":
            exchanges.append(current)
            current = []
    if current:
        exchanges.append(current)
    return system, exchanges


def encode_example(tokenizer, example: Example, max_length: int) -> dict[str, list[int]]:
    """Input ids and labels of at most ``max_length`` tokens: whole leading exchanges are
    dropped first (the longest suffix of exchanges that fits is kept); if the last exchange
    with an answer is too long on its own, its start is cut (the end, which holds the answer,
    is kept).

    The suffix is found by bisection on the rendered length (which grows with every exchange
    added in front), so a long dialogue costs O(log exchanges) renders, not one per exchange.
    """
    system, exchanges = _exchanges(example.messages)
    answered = [k for k, ex in enumerate(exchanges) if any(m["role"] == "assistant" for m in ex)]
    # candidate starts: 0 .. the last exchange holding an answer (a suffix without one teaches nothing)
    lo, hi = 0, answered[-1] if answered else len(exchanges) - 1

    def length(start: int) -> int:
        return len(_ids(tokenizer, system + [m for ex in exchanges[start:] for m in ex]))

    if length(lo) > max_length:
        while lo < hi:  # smallest start whose suffix fits; hi itself is kept even if it does not
            mid = (lo + hi) // 2
            if length(mid) <= max_length:
                hi = mid
            else:
                lo = mid + 1
    ids, labels = encode_conversation(tokenizer, system + [m for ex in exchanges[lo:] for m in ex])
    if len(ids) > max_length:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return {"input_ids": ids, "labels": labels}


def encode_prompt(tokenizer, example: Example) -> list[int]:
    """Tokens of the conversation up to its last assistant turn, ready for generation."""
    last = max(k for k, m in enumerate(example.messages) if m["role"] == "assistant")
    return _ids(tokenizer, example.messages[:last], add_generation_prompt=True)


class EncodedDataset(torch.utils.data.Dataset):
    """A ``torch`` dataset of tokenised examples, as ``Trainer`` takes them.

    Each item is ``{"input_ids", "attention_mask", "labels"}`` (lists of ints) from
    :func:`encode_example`: the chat template applied, labels on assistant tokens only, whole
    leading exchanges dropped to fit ``max_length``. Examples left with no label to learn from are
    dropped.

    Args:
        tokenizer: the model's tokenizer (with a chat template).
        examples: the examples to encode.
        max_length: the most tokens per sequence.

    Raises:
        ValueError: ``max_length`` below 8 tokens.
    """

    def __init__(self, tokenizer, examples: list[Example], max_length: int):
        if max_length < 8:
            raise ValueError(f"`max_length` must be at least 8 tokens, got {max_length}")
        self.items = [encode_example(tokenizer, e, max_length) for e in examples]
        self.items = [it for it in self.items if any(label != IGNORE for label in it["labels"])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


@dataclass
class Collator:
    """Right-pads a batch: pad id for inputs, -100 for labels, 0 in the attention mask."""

    pad_token_id: int

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for k, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[k, :n] = torch.tensor(b["input_ids"])
            labels[k, :n] = torch.tensor(b["labels"])
            mask[k, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
