"""The wire format's limits on shape, one rule for senders and the worker alike."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from typing import Any

import pytest
from cbus import codec
from cbus.errors import ValidationError


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


# validate() checks a command of scalar fields on its values rather than scanning its
# JSON; a command with a nested field is scanned. Both refuse the same inputs.
@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Flat:
    n: int
    x: float = 0.0
    s: str | None = None
    d: decimal.Decimal | None = None
    when: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Nested:
    n: int
    items: list[int] = dataclasses.field(default_factory=list)


@pytest.mark.parametrize("type_", [Flat, Nested])
def test_validate_refuses_an_int_beyond_int64_at_its_field(type_: type[Any]) -> None:
    assert codec.validate(type_(n=codec.INT64_MAX)) == b'{"n":9223372036854775807' + (
        b',"x":0.0,"s":null,"d":null,"when":null}' if type_ is Flat else b',"items":[]}'
    )
    for n in (codec.INT64_MAX + 1, codec.INT64_MIN - 1, 10**400):
        with pytest.raises(ValidationError, match=r"within int64 .* at `\$\.n`"):
            codec.validate(type_(n=n))


def test_validate_refuses_a_flat_field_given_other_types() -> None:
    # An int where a float is declared is a JSON integer: the same int64 rule.
    with pytest.raises(ValidationError, match=r"within int64 .* at `\$\.x`"):
        codec.validate(Flat(n=1, x=10**20))  # type: ignore[arg-type]
    # A nested value in a scalar field: decode refuses it at the field, without
    # recursing into it however deep it goes.
    deep: Any = [1]
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValidationError, match=r"Expected `str \| null`, got `array` - at `\$\.s`"):
        codec.validate(Flat(n=1, s=deep))
    with pytest.raises(ValidationError, match=r"Expected `str \| null`, got `array` - at `\$\.s`"):
        codec.validate(Flat(n=1, s=[10**30]))
    with pytest.raises(ValidationError, match="nested 102 levels deep, more than the 64"):
        codec.validate(Nested(n=1, items=deep))
    # Deeper than the encoder recurses: refused, not a RecursionError.
    for _ in range(5000):
        deep = [deep]
    for value in (Flat(n=1, s=deep), Nested(n=1, items=deep)):
        with pytest.raises(ValidationError, match="recursion"):
            codec.validate(value)
