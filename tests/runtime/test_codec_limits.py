"""The wire format's limits on shape, one rule for senders and the worker alike."""

from __future__ import annotations

import pytest
from cbus import codec


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"n": 1}', None),
        (b"[" * codec.MAX_DEPTH + b"]" * codec.MAX_DEPTH, None),
        (b"[" * (codec.MAX_DEPTH + 1) + b"]" * (codec.MAX_DEPTH + 1), "nested 65 levels"),
        (b'{"a": "' + b"[" * 1000 + b'"}', None),  # brackets inside a string do not nest
        (b'{"a": "\\"' + b"{" * 1000 + b'"}', None),
        (b'{"n": 9223372036854775807, "m": -9223372036854775808}', None),
        (b'{"n": 9223372036854775808}', "an integer of 19 digits"),
        (b'{"n": -9223372036854775809}', "an integer of 19 digits"),
        (b'{"n": 1' + b"0" * 29 + b"}", "an integer of 30 digits"),
        (b'{"n": 1' + b"0" * 400 + b"}", "an integer of 401 digits"),
        (b'{"n": 1.1234567890123456789012, "e": 1e-1234567890123456789012}', None),
        (b'{"s": "123456789012345678901234567890"}', None),
    ],
)
def test_shape_problem(data: bytes, problem: str | None) -> None:
    found = codec.shape_problem(data)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_int64_problem_is_the_one_rule() -> None:
    assert codec.int64_problem(codec.INT64_MAX) is None
    assert codec.int64_problem(codec.INT64_MIN) is None
    assert codec.int64_problem(10**29) == (
        "an integer of 97 bits is outside int64 (-2**63 to 2**63 - 1), cbus's `int`"
    )
