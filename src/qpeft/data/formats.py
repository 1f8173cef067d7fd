"""Readers for training data. Every reader returns :class:`Example` objects: a chat
conversation (``{"role", "content"}`` messages) and, for math tasks, the reference answer.

Errors name the file and line: a missing path, an empty file, a malformed JSON line, a
dialogue without an assistant turn, an unknown role or speaker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    """One training or evaluation example: a conversation in the chat ``messages`` format
    (``[{"role": "system" | "user" | "assistant", "content": str}, ...]``; the loss covers the
    assistant turns), with the reference ``answer`` of a math task, the ``source`` it was read
    from (for messages) and any ``meta`` data a reader keeps."""

    messages: list[dict[str, str]]
    answer: str | None = None
    """reference final answer (math tasks), compared by exact match after number extraction"""
    source: str = ""
    meta: dict = field(default_factory=dict)


class DataError(ValueError):
    """Bad training data; the message names the file and line."""


def _where(path: Path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def check_conversation(messages: list, where: str) -> list[dict[str, str]]:
    """Check one conversation and keep only the ``role`` and ``content`` of each message.

    Args:
        messages: the conversation as read from a file.
        where: what to name in an error (file and line).

    Returns:
        ``[{"role", "content"}, ...]``, the same messages.

    Raises:
        DataError: (a ValueError) not a non-empty list, a message without role or content, an
            unknown role, a non-string content, or no assistant turn (nothing to learn); the
            message names ``where`` and the message index.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: a conversation must be a non-empty list of messages")
    clean = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: message {k} must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: unknown role {m['role']!r} in message {k}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: message {k} content must be a string")
        clean.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in clean):
        raise DataError(f"{where}: the dialogue has no assistant turn, so there is nothing to learn from it")
    return clean


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data path {path} does not exist")
    return path


def _json_lines(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path} is empty")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{_where(path, number)}: malformed JSON ({err.msg} at column {err.colno})") from err


def read_chat_jsonl(path: str | Path) -> list[Example]:
    """JSON lines ``{"messages": [{"role": ..., "content": ...}, ...]}``."""
    path = _existing(path)
    out = []
    for number, record in _json_lines(path):
        if not isinstance(record, dict) or "messages" not in record:
            raise DataError(f"{_where(path, number)}: expected an object with a 'messages' list")
        messages = check_conversation(record["messages"], _where(path, number))
        out.append(Example(messages, record.get("answer"), source=_where(path, number)))
    return out


_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k_final_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after its last ``####``, stripped, with
    thousands separators removed (``"... #### 1,234"`` -> ``"1234"``)."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def read_gsm8k(path: str | Path) -> list[Example]:
    """GSM8K JSON lines ``{"question", "answer"}``; the answer is a worked solution ending in
    ``#### N``. Calculator annotations ``<<a*b=c>>`` are removed from the target text."""
    path = _existing(path)
    out = []
    for number, record in _json_lines(path):
        if not isinstance(record, dict) or "question" not in record or "answer" not in record:
            raise DataError(f"{_where(path, number)}: expected an object with 'question' and 'answer'")
        if "####" not in record["answer"]:
            raise DataError(f"{_where(path, number)}: the answer has no final '#### <number>' line")
        solution = _CALCULATOR.sub("", record["answer"])
        messages = [
            {"role": "user", "content": record["question"]},
            {"role": "assistant", "content": solution},
        ]
        out.append(Example(messages, gsm8k_final_answer(record["answer"]), source=_where(path, number)))
    return out


CPSYCOUND_SPEAKERS = {"来访者": "user", "心理咨询师": "assistant"}
_TURN = re.compile(r"^(\S+?)[：:](.*)$", re.S)


def read_cpsycound_file(path: Path) -> Example:
    """One CPsyCounD dialogue: blank-line separated turns ``来访者：...`` (client, user) and
    ``心理咨询师：...`` (counsellor, assistant); lines without a speaker continue the turn."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path} is empty")
    messages: list[dict[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _TURN.match(line.strip())
        speaker = match.group(1) if match else None
        if speaker in CPSYCOUND_SPEAKERS:
            role = CPSYCOUND_SPEAKERS[speaker]
            content = match.group(2).strip()
            if messages and messages[-1]["role"] == role:  # the same speaker again: one turn
                messages[-1]["content"] += "\n" + content
            else:
                messages.append({"role": role, "content": content})
        elif messages:
            messages[-1]["content"] += "\n" + line.strip()
        else:
            known = "、".join(CPSYCOUND_SPEAKERS)
            raise DataError(f"{_where(path, number)}: unknown speaker {speaker!r}; expected one of {known}")
    return Example(check_conversation(messages, str(path)), source=str(path))


def read_cpsycound(path: str | Path) -> list[Example]:
    """A CPsyCounD directory (every ``*.txt`` inside, sorted) or a single dialogue file."""
    path = _existing(path)
    files = sorted(path.rglob("*.txt"), key=_natural) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path} holds no .txt dialogues")
    return [read_cpsycound_file(f) for f in files]


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]
