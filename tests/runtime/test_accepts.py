"""A sender's quick check of plain fields agrees with decode on every value (cbus._accepts).

`codec.validate` skips the decode when `_accepts.certain` says decode accepts: here
every value of a set of awkward ones goes through validate twice, with the quick
check and without it, and both must accept the same values with the same bytes
and refuse the same values with the same message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import itertools
import uuid
from typing import Annotated, Any

import msgspec
import pytest
from cbus import _accepts, codec
from cbus.errors import ValidationError


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.IntEnum):
    S = 1
    M = 2


class MyStr(str):
    pass


class MyInt(int):
    pass


ONE = uuid.UUID(int=1)
Bounded = Annotated[int, msgspec.Meta(ge=-3, lt=10)]
Short = Annotated[str, msgspec.Meta(min_length=2, max_length=3)]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Plain:
    n: int = 0
    b: Bounded = 0
    s: Short = "ab"
    f: float = 0.0
    flag: bool = False
    u: uuid.UUID = ONE
    d: decimal.Decimal = decimal.Decimal("1")
    at: dt.datetime = dt.datetime(2026, 1, 1)
    day: dt.date = dt.date(2026, 1, 1)
    t: dt.time = dt.time(12, 0)
    colour: Colour = Colour.RED
    size: Size = Size.S
    note: str | None = None
    maybe: Bounded | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Patterned:
    code: Annotated[str, msgspec.Meta(pattern="^[A-Z]+$")] = "AB"


class Checked(msgspec.Struct, frozen=True):
    n: int = 0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must not be negative")


TZ = dt.timezone(dt.timedelta(hours=2))
CANDIDATES: dict[str, list[Any]] = {
    "n": [0, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, True, 1.0, "1", MyInt(3), None],
    "b": [-3, -4, 9, 10, 0, False, None],
    "s": ["ab", "abc", "a", "abcd", "𝄞𝄞", "é", "a\x00", MyStr("ab"), 12, None],
    "f": [0.0, -1.5, float("nan"), float("inf"), float("-inf"), 1, True, "1.0", None],
    "flag": [True, False, 0, 1, "true", None],
    "u": [uuid.UUID(int=0), uuid.uuid4(), "00000000-0000-0000-0000-000000000000", None],
    "d": [
        decimal.Decimal("19.99"),
        decimal.Decimal("NaN"),
        decimal.Decimal("sNaN"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("-0"),
        decimal.Decimal("1E+999999"),
        1.5,
        3,
        "2.5",
        None,
    ],
    "at": [
        dt.datetime(2026, 1, 1, 12, 30, 1, 5),
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, tzinfo=TZ),
        dt.datetime(1, 1, 1),
        dt.date(2026, 1, 1),
        "2026-01-01T00:00:00",
        None,
    ],
    "day": [dt.date(2026, 1, 1), dt.datetime(2026, 1, 1), "2026-01-01", None],
    "t": [dt.time(0, 0), dt.time(1, 2, 3, tzinfo=dt.UTC), dt.time(1, tzinfo=TZ), None],
    "colour": [Colour.BLUE, "red", Size.S, None],
    "size": [Size.M, 2, 3, Colour.RED, None],
    "note": [None, "", "x", 1, MyStr("y")],
    "maybe": [None, 5, 10, -4, True],
}


def _outcome(value: Any) -> tuple[str, bytes | str]:
    try:
        return "accepted", codec.validate(value)
    except ValidationError as exc:
        return "refused", str(exc)


def _decode_only(value: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes | str]:
    with monkeypatch.context() as m:
        m.setattr(codec, "rules", lambda type_: None)
        return _outcome(value)


def test_plain_fields_have_rules_and_others_do_not() -> None:
    assert _accepts.rules(Plain) is not None
    assert _accepts.rules(Patterned) is None  # a pattern is left to decode
    assert _accepts.rules(Checked) is None  # so is whatever __post_init__ refuses


@pytest.mark.parametrize("field", sorted(CANDIDATES))
def test_the_quick_check_agrees_with_decode_on_every_value(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = _accepts.rules(Plain)
    assert rules is not None
    quick = 0
    for candidate in CANDIDATES[field]:
        value = Plain(**{field: candidate})
        if _accepts.certain(value, rules):
            quick += 1
        assert _outcome(value) == _decode_only(value, monkeypatch), (field, candidate)
    assert quick > 0, f"no value of {field} took the quick check"


def test_the_quick_check_takes_only_values_decode_accepts() -> None:
    rules = _accepts.rules(Plain)
    assert rules is not None
    decoder = msgspec.json.Decoder(Plain)
    fields = ("n", "s", "f", "d", "at", "maybe")
    for combo in itertools.product(*(CANDIDATES[f][:5] for f in fields)):
        value = Plain(**dict(zip(fields, combo, strict=True)))
        if _accepts.certain(value, rules):
            data = codec.encode(value)  # bytes, not values: Decimal("NaN") != itself
            assert codec.encode(decoder.decode(data)) == data


def test_a_refused_value_keeps_decodes_message() -> None:
    with pytest.raises(ValidationError, match=r"Expected `str` of length >= 2 - at `\$.s`"):
        codec.validate(Plain(s="a"))
    with pytest.raises(ValidationError, match="NUL character"):
        codec.validate(Plain(s="a\x00"))
    with pytest.raises(ValidationError, match=r"Expected `float`, got `null` - at `\$.f`"):
        codec.validate(Plain(f=float("nan")))
