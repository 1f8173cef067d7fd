"""Evaluation: held-out loss and perplexity, math exact-match accuracy with batched greedy
generation and final-number extraction, and a few saved generation samples.

Each function shows a progress bar (examples scored, answers generated) when ``progress`` is
True, or with ``progress=None`` when stderr is a terminal; ``label`` says what is evaluated."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from qpeft.data.collate import IGNORE, Collator, EncodedDataset, encode_prompt
from qpeft.data.formats import Example

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalise_number(text: str) -> str | None:
    """The first number in ``text``, normalised for exact-match comparison: thousands separators
    removed, trailing zeros of a decimal dropped (``"1,200.50"`` -> ``"1200.5"``, ``"3.0"`` ->
    ``"3"``).

    Returns:
        The number as a string, or None when ``text`` holds no number.
    """
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = match.group(0).replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def extract_answer(text: str) -> str | None:
    """The final number of a solution: after the last ``####`` (GSM8K style) when present,
    else the last number in the text."""
    if "####" in text:
        return normalise_number(text.rsplit("####", 1)[1])
    numbers = _NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def _bar(total: int, desc: str, unit: str, progress: bool | None):
    """A progress bar on stderr: shown when ``progress``, on a terminal only when None."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if progress is None else not progress, leave=False)


def _desc(label: str, what: str) -> str:
    return f"{label}: {what}" if label else what


@torch.no_grad()
def evaluate_loss(
    model,
    tokenizer,
    examples: list[Example],
    max_length: int,
    batch_size: int = 8,
    *,
    progress: bool | None = False,
    label: str = "",
) -> dict:
    """Token-weighted mean loss over the assistant tokens of held-out examples.

    Returns ``{"eval_loss", "perplexity", "eval_tokens"}`` (None / 0 without any example)."""
    dataset = EncodedDataset(tokenizer, examples, max_length)
    if len(dataset) == 0:
        return {"eval_loss": None, "perplexity": None, "eval_tokens": 0}
    collate = Collator(tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    bar = _bar(len(dataset), _desc(label, "loss"), "example", progress)
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        shift_logits, shift_labels = logits[:, :-1], batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        total += loss.item()
        tokens += int((shift_labels != IGNORE).sum())
        bar.update(len(batch["input_ids"]))
    bar.close()
    model.train(was_training)
    mean = total / tokens
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "eval_tokens": tokens}


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    examples: list[Example],
    max_new_tokens: int = 96,
    batch_size: int = 8,
    *,
    progress: bool | None = False,
    label: str = "",
) -> list[str]:
    """Greedy completions of each example's last prompt, batched with left padding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    outputs = []
    bar = _bar(len(examples), _desc(label, f"answers (greedy, up to {max_new_tokens} tokens)"), "answer", progress)
    for start in range(0, len(examples), batch_size):
        prompts = [encode_prompt(tokenizer, e) for e in examples[start : start + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, p in enumerate(prompts):
            ids[k, width - len(p) :] = torch.tensor(p)
            mask[k, width - len(p) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
        )
        outputs += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        bar.update(len(prompts))
    bar.close()
    model.train(was_training)
    return outputs


def math_accuracy(
    model,
    tokenizer,
    examples: list[Example],
    max_new_tokens: int = 96,
    batch_size: int = 8,
    *,
    progress: bool | None = False,
    label: str = "",
) -> tuple[float, list[dict]]:
    """Exact match of the extracted final number against each example's reference answer.

    Returns (accuracy, one record per scored example: prompt, completion, predicted, reference, correct)."""
    scored = [e for e in examples if e.answer is not None]
    completions = generate_answers(model, tokenizer, scored, max_new_tokens, batch_size, progress=progress, label=label)
    records = []
    for example, text in zip(scored, completions):
        predicted = extract_answer(text)
        reference = normalise_number(str(example.answer))
        records.append(
            {
                "prompt": example.messages[-2]["content"] if len(example.messages) > 1 else "",
                "completion": text,
                "predicted": predicted,
                "reference": reference,
                "correct": predicted is not None and predicted == reference,
            }
        )
    accuracy = sum(r["correct"] for r in records) / len(records) if records else float("nan")
    return accuracy, records


def evaluate(
    model,
    tokenizer,
    examples: list[Example],
    max_length: int,
    samples_path: Path | None = None,
    n_samples: int = 8,
    *,
    generate: bool = True,
    progress: bool | None = False,
    label: str = "",
) -> dict:
    """Loss / perplexity of ``examples``; with ``generate``, also the accuracy of greedy answers
    where the examples carry reference answers (else ``n_samples`` sample completions), and the
    first ``n_samples`` of those written to ``samples_path`` as JSONL.

    ``generate=False`` scores the loss only (one forward pass per batch, no generation).
    Returns the :func:`evaluate_loss` entries, plus ``accuracy`` and ``accuracy_examples``."""
    if samples_path is not None and not generate:
        raise ValueError("samples are generated answers: drop --samples, or evaluate with generation")
    shown = {"progress": progress, "label": label}
    result = evaluate_loss(model, tokenizer, examples, max_length, **shown)
    if not generate:
        return result
    if any(e.answer is not None for e in examples):
        accuracy, records = math_accuracy(model, tokenizer, examples, **shown)
        result["accuracy"] = accuracy
        result["accuracy_examples"] = len(records)
        samples = records[:n_samples]
    else:
        completions = generate_answers(model, tokenizer, examples[:n_samples], max_new_tokens=64, **shown)
        samples = [
            {"prompt": e.messages[-2]["content"] if len(e.messages) > 1 else "", "completion": c}
            for e, c in zip(examples, completions)
        ]
    if samples_path is not None:
        with open(samples_path, "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
    return result
