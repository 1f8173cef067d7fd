"""Training data: readers, the built-in arithmetic task, tokenisation and collation."""

from qpeft.data.collate import Collator, EncodedDataset, encode_example, encode_prompt
from qpeft.data.formats import DataError, Example, read_chat_jsonl, read_cpsycound, read_gsm8k
from qpeft.data.split import example_key, overlap, run_split
from qpeft.data.tasks import arithmetic_task, load_examples, train_test_split

__all__ = [
    "Collator",
    "DataError",
    "EncodedDataset",
    "Example",
    "arithmetic_task",
    "encode_example",
    "encode_prompt",
    "example_key",
    "load_examples",
    "overlap",
    "read_chat_jsonl",
    "read_cpsycound",
    "read_gsm8k",
    "run_split",
    "train_test_split",
]
