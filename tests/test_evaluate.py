"""Final-number extraction for exact-match accuracy."""

import pytest

from qpeft.evaluate import extract_answer, normalise_number


@pytest.mark.parametrize(
    "text,expected",
    [
        ("12 + 5 = 17\n#### 17", "17"),
        ("so she has #### 1,250 dollars", "1250"),
        ("The answer is 42.", "42"),
        ("First 3, then 7, finally 10.0", "10"),
        ("#### -3", "-3"),
        ("no number here", None),
        ("2.50 and then 3.75", "3.75"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalise_number():
    assert normalise_number("1,000.00") == "1000"
    assert normalise_number("x") is None
