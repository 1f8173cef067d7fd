"""Readers on the real data in ../shared/data and on small files with errors."""

import json
import re
from pathlib import Path

import pytest

from qpeft.data import DataError, arithmetic_task, load_examples, read_chat_jsonl, read_cpsycound, read_gsm8k
from qpeft.data.tasks import train_test_split

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


@needs_shared
def test_real_cpsycound_dialogues():
    files = sorted((SHARED / "cpsycound" / "Data").glob("case_*.txt"))[:50]
    examples = [read_cpsycound(f)[0] for f in files]
    for e in examples:
        roles = [m["role"] for m in e.messages]
        assert roles[0] == "user" and "assistant" in roles
        assert all(a != b for a, b in zip(roles, roles[1:]))  # turns alternate
        # speaker tags are stripped (a client may still address the counsellor: "心理咨询师，...")
        assert all(m["content"] and not re.match(r"(来访者|心理咨询师)[：:]", m["content"]) for m in e.messages)
    assert len(read_cpsycound(SHARED / "cpsycound" / "Data")) == 3084


@needs_shared
def test_real_gsm8k():
    examples = read_gsm8k(SHARED / "gsm8k" / "test.jsonl")
    assert len(examples) == 1319
    first = examples[0]
    assert first.messages[0]["role"] == "user" and first.answer == "18"
    assert "<<" not in first.messages[1]["content"] and first.messages[1]["content"].strip().endswith("#### 18")
    assert load_examples(str(SHARED / "gsm8k" / "test.jsonl"))[0].answer == "18"  # detected as GSM8K


def test_chat_jsonl_round_trip(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        }
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (example,) = load_examples(str(path))
    assert example.messages == rows[0]["messages"]


@pytest.mark.parametrize(
    "content,message",
    [
        ("", r"chat.jsonl is empty"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{oops',
            r"chat.jsonl:2: malformed JSON",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}]}',
            r"chat.jsonl:1: the dialogue has no assistant turn",
        ),
        (
            '{"messages": [{"role": "robot", "content": "a"}]}',
            r"chat.jsonl:1: unknown role 'robot' in message 0",
        ),
        ('{"text": "a"}', r"chat.jsonl:1: expected an object with a 'messages' list"),
    ],
)
def test_chat_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "chat.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_chat_jsonl(path)


def test_cpsycound_errors(tmp_path):
    bad = tmp_path / "case_1.txt"
    bad.write_text("访客：你好\n\n心理咨询师：你好")
    with pytest.raises(DataError, match=r"case_1.txt:1: unknown speaker '访客'"):
        read_cpsycound(bad)
    only_client = tmp_path / "case_2.txt"
    only_client.write_text("来访者：你好\n\n来访者：还在吗")
    with pytest.raises(DataError, match="case_2.txt: the dialogue has no assistant turn"):
        read_cpsycound(only_client)
    empty = tmp_path / "case_3.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="case_3.txt is empty"):
        read_cpsycound(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cpsycound(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="neither the built-in 'arithmetic' task nor an existing path"):
        load_examples("no-such-data")


def test_gsm8k_errors(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(DataError, match=r"g.jsonl:1: the answer has no final '#### <number>' line"):
        read_gsm8k(path)


def test_arithmetic_task_is_seeded_and_correct():
    a, b = arithmetic_task(50, level=3, seed=1), arithmetic_task(50, level=3, seed=1)
    assert [e.messages for e in a] == [e.messages for e in b]
    assert [e.messages for e in a] != [e.messages for e in arithmetic_task(50, level=3, seed=2)]
    for e in a:  # the worked steps really compute the answer
        for line in e.messages[1]["content"].splitlines()[:-1]:
            lhs, rhs = line.split(" = ")
            assert eval(lhs) == int(rhs)  # noqa: S307 - our own generated "a op b"
        assert e.messages[1]["content"].endswith(f"#### {e.answer}")
        assert len(e.messages[1]["content"].splitlines()) == 4  # three steps + answer at level 3


def test_split_is_deterministic_and_disjoint():
    examples = arithmetic_task(40, seed=0)
    train, test = train_test_split(examples, 0.25, seed=3)
    again = train_test_split(examples, 0.25, seed=3)
    assert [e.source for e in train] == [e.source for e in again[0]]
    assert len(test) == 10 and not {e.source for e in train} & {e.source for e in test}
    assert [e.source for e in train_test_split(examples, 0.25, seed=4)[1]] != [e.source for e in test]
