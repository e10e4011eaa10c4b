"""Sender defaults at run time: `extra.Tally` of the kitchen case, both model styles.

A default that must be built per command (list, dict, struct, `any` object, UUID)
defaults to `cbus.registry.DEFAULT` in the sender, which then leaves the argument out
so the model's factory builds it; an explicit value, None included where the field
takes it, is sent as given. Senders write to a fake connection; the message is read
back with the codec. `test_typing` checks the same senders under `mypy --strict`.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
import uuid
from typing import Any

import cbus
import cbus.codec
import cbus.registry
import pytest

from .conftest import FakeAsyncConn, FakeConn, Generated

REF = uuid.UUID("8d4e2f4a-7c1b-4f62-9a51-3f1f8f0c9b21")
DEFAULTS = (
    '{"n":1,"counts":{"a":1},"items":[],"tag":{"name":"t","weight":1},'
    '"ref":"8d4e2f4a-7c1b-4f62-9a51-3f1f8f0c9b21","blob":{"k":[1]},"none":null,"one":1,'
    '"maybe":null}'
)


def _message(conn: FakeConn | FakeAsyncConn) -> str:
    message: str = conn.params[-1]["message"]
    return message


def test_left_out_arguments_get_the_schema_defaults(generated: Generated) -> None:
    extra = generated.extra
    conn = FakeConn()
    extra.send_tally(conn, n=1)
    assert _message(conn) == DEFAULTS
    cmd = cbus.codec.decode(conn.params[-1]["message"], extra.Tally)
    assert cmd == extra.Tally(n=1)
    assert (cmd.counts, cmd.tag, cmd.ref, cmd.blob, cmd.none) == (
        {"a": 1},
        extra.Tag(name="t"),
        REF,
        {"k": [1]},
        None,
    )


def test_async_senders_leave_out_the_same_arguments(generated: Generated) -> None:
    aconn = FakeAsyncConn()
    asyncio.run(generated.extra.send_tally_async(aconn, n=1))
    assert _message(aconn) == DEFAULTS


def test_given_arguments_are_sent_as_given(generated: Generated) -> None:
    extra = generated.extra
    conn = FakeConn()
    ref = uuid.UUID(int=5)
    extra.send_tally(
        conn,
        n=2,
        counts={},
        items=[3],
        tag=extra.Tag(name="u", weight=4),
        ref=ref,
        blob=[None],
        one="x",
        maybe={"m": 0},
    )
    assert _message(conn) == (
        '{"n":2,"counts":{},"items":[3],"tag":{"name":"u","weight":4},'
        '"ref":"00000000-0000-0000-0000-000000000005","blob":[null],"none":null,"one":"x",'
        '"maybe":{"m":0}}'
    )


def test_none_is_a_value_of_any_not_its_default(generated: Generated) -> None:
    conn = FakeConn()
    generated.extra.send_tally(conn, n=1, blob=None, none=None, one=None)
    assert _message(conn) == DEFAULTS.replace('"blob":{"k":[1]}', '"blob":null').replace(
        '"one":1', '"one":null'
    )


@pytest.mark.parametrize("name", ["counts", "items", "tag", "ref"])
def test_none_for_a_field_that_is_not_nullable_is_refused(generated: Generated, name: str) -> None:
    """mypy refuses it (`test_typing`); at run time the send-time check does."""
    kwargs: dict[str, Any] = {name: None}
    conn = FakeConn()
    with pytest.raises(cbus.ValidationError, match=rf"got `null` - at `\$\.{name}`$"):
        generated.extra.send_tally(conn, n=1, **kwargs)
    assert conn.params == []


def test_each_command_builds_its_own_defaults(generated: Generated) -> None:
    build = generated.extra._build_tally
    one, two = build(n=1), build(n=1)
    assert one == two
    assert one.items is not two.items and one.counts is not two.counts
    assert one.blob is not two.blob and one.tag is not two.tag


def test_signatures_show_the_sentinel(generated: Generated) -> None:
    params = inspect.signature(generated.extra.send_tally).parameters
    for name in ("counts", "items", "tag", "ref", "blob"):
        assert params[name].default is cbus.registry.DEFAULT
    assert (params["none"].default, params["one"].default, params["maybe"].default) == (
        None,
        1,
        None,
    )
    assert str(params["counts"]) == "counts: 'dict[str, int]' = <schema default>"


def test_the_sentinel_is_one_object() -> None:
    default = cbus.registry.DEFAULT
    assert copy.copy(default) is default
    assert copy.deepcopy(default) is default
    assert pickle.loads(pickle.dumps(default)) is default
    assert repr(default) == "<schema default>"
