"""Property tests: generated types round-trip, and no input crashes the loader.

Strategies are derived from cbgen's own checked schema (types and constraints), so
"any valid value" means valid by the schema, and msgspec's decoder, which checks
every constraint, must give back an equal value.
"""

from __future__ import annotations

import datetime
import math
import sys
from typing import Any

import cbus.codec
import pytest
from cbgen import SchemaError
from cbgen.defs import FieldDef, TypeDef, TypeRef
from cbgen.model import build
from cbgen.pipeline import load_schemas, load_sources
from cbgen.render import render_package
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import CASES, REPO, Generated

SCHEMAS = load_schemas(sorted(CASES.joinpath("kitchen").glob("*.yaml")), CASES)
TYPES = {(s.domain, t.name): t for s in SCHEMAS for t in s.types}
COMMANDS = {c.name: c for s in SCHEMAS for c in s.commands}
TEXT = st.characters(exclude_categories=["Cs"])
INT64 = 2**63 - 1

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-INT64, INT64)
    | st.text(TEXT, max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _scalar(name: str, c: dict[str, Any]) -> st.SearchStrategy[Any]:
    lo, hi = c.get("min_length", 0), c.get("max_length", 8)
    if name == "string":
        if "pattern" in c:
            return st.from_regex(c["pattern"]).filter(lambda s: lo <= len(s) <= hi)
        return st.text(TEXT, min_size=lo, max_size=hi)
    if name == "int":
        low = c["ge"] if "ge" in c else c["gt"] + 1 if "gt" in c else -INT64
        high = c["le"] if "le" in c else c["lt"] - 1 if "lt" in c else INT64
        return st.integers(low, high)
    if name == "float":
        return st.floats(
            min_value=c.get("ge", c.get("gt")),
            max_value=c.get("le", c.get("lt")),
            exclude_min="gt" in c,
            exclude_max="lt" in c,
            allow_nan=False,
            allow_infinity=False,
        )
    return {
        "bool": st.booleans(),
        "decimal": st.decimals(allow_nan=False, allow_infinity=False),
        "uuid": st.uuids(),
        "datetime": st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
        "date": st.dates(),
        "time": st.times(),
        "bytes": st.binary(min_size=lo, max_size=hi),
        "any": JSON,
    }[name]


def strategy(ref: TypeRef, c: dict[str, Any], gen: Generated, depth: int) -> st.SearchStrategy[Any]:
    """Values of `ref` within constraints `c`; recursive types stop growing at depth 3."""
    if ref.nullable and depth > 3:
        return st.none()
    if ref.kind == "scalar":
        base = _scalar(ref.name, c)
    elif ref.kind in ("list", "dict"):
        assert ref.item is not None
        lo = c.get("min_length", 0)
        if depth > 3 and lo == 0:
            base = st.just([]) if ref.kind == "list" else st.just({})
        else:
            item = strategy(ref.item, {}, gen, depth + 1)
            hi = max(lo, min(c.get("max_length", 3), 3))
            if ref.kind == "list":
                base = st.lists(item, min_size=lo, max_size=hi)
            else:
                base = st.dictionaries(st.text(TEXT, max_size=4), item, min_size=lo, max_size=hi)
    else:
        assert ref.target is not None
        base = struct(ref.target, gen, depth + 1)
    return st.none() | base if ref.nullable else base


def _fields(fields: list[FieldDef], gen: Generated, depth: int) -> dict[str, Any]:
    return {f.name: strategy(f.type, f.constraints, gen, depth) for f in fields}


def struct(t: TypeDef, gen: Generated, depth: int = 0) -> st.SearchStrategy[Any]:
    module = gen.kitchen if t.domain == "kitchen" else gen.extra
    cls = getattr(module, t.name)
    if t.enum is not None:
        return st.sampled_from(list(cls))
    return st.builds(cls, **_fields(t.fields or [], gen, depth))


def _roundtrip(value: Any) -> None:
    data = cbus.codec.encode(value)
    back = cbus.codec.decode(data, type(value))
    assert back == value, data


@pytest.mark.parametrize("name", ["Everything", "Empty"])
def test_commands_survive_encode_decode(generated: Generated, name: str) -> None:
    cmd = COMMANDS[name]
    cls = getattr(generated.kitchen, name)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.builds(cls, **_fields(cmd.fields, generated, 0)))
    def check(value: Any) -> None:
        _roundtrip(value)

    check()


@pytest.mark.parametrize("key", sorted(TYPES))
def test_types_survive_encode_decode(generated: Generated, key: tuple[str, str]) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(struct(TYPES[key], generated))
    def check(value: Any) -> None:
        _roundtrip(value)

    check()


def _compile(text: str) -> None:
    try:
        package = build(load_sources([("x.yaml", text)]), "p", "dataclass")
    except SchemaError as exc:
        assert exc.errors and all(e.startswith("x.yaml:") for e in exc.errors)
        return
    render_package(package)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(":-[]{}?*&!|>'\"#%@`,\n \tabcAB12.\\") | TEXT, max_size=120))
def test_random_text_never_crashes_the_loader(text: str) -> None:
    _compile(text)


ORDERS = (REPO / "schemas" / "orders.yaml").read_text()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(ORDERS)),
            st.integers(0, 6),
            st.text(st.sampled_from(":-[]{}? \n'\"#&*!abZ1"), max_size=3),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_schemas_never_crash_the_loader(edits: list[tuple[int, int, str]]) -> None:
    text = ORDERS
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut :]
    _compile(text)


def test_nesting_and_aliases_are_refused_not_crashing() -> None:
    _compile("a: &x [*x]\n")
    _compile("[" * 10_000)
    _compile("cbus: 1\n" + "x:\n" + "".join("  " * i + "- \n" for i in range(200)))
    assert math.isfinite(sys.getrecursionlimit())
