"""`previous` and `aliases` in a command: checked like the rest, at FILE:LINE:COL."""

from __future__ import annotations

import pytest
from cbgen import SchemaError
from cbgen.pipeline import load_sources


def _errors(text: str) -> list[str]:
    with pytest.raises(SchemaError) as info:
        load_sources([("o.yaml", text)])
    return info.value.errors


BAD = """cbus: 1
domain: orders
commands:
  CreateOrder:
    version: 2
    fields: {order_id: uuid, channel: {type: string, default: web}}
    previous:
      1:
        fields: {order_id: uuid, customer: {type: strin}, n: {type: int, default: x}}
        feilds: 1
      3: {}
      0: {}
      one: {}
    aliases: [orders.PlaceOrder, other.X, orders.CancelOrder, bad, orders.CreateOrder]
  CancelOrder:
    aliases: [orders.PlaceOrder]
"""


def test_errors() -> None:
    assert _errors(BAD) == [
        "o.yaml:9:51: Unknown type `strin` (did you mean `string`?)",
        "o.yaml:9:83: Invalid default for `n`: Expected `int`, got `str`",
        "o.yaml:10:9: Unknown key `feilds` (did you mean `fields`?)",
        "o.yaml:11:7: Previous version 3 of `CreateOrder` must be below its `version` (2)",
        "o.yaml:12:7: Expected a version number >= 1 in `previous`, got `0`",
        "o.yaml:13:7: Expected a version number >= 1 in `previous`, got `one`",
        "o.yaml:14:34: Alias `other.X` is in another domain: an alias names an earlier "
        "kind of this domain (`orders.X`)",
        "o.yaml:14:43: Alias `orders.CancelOrder` is already a command or alias "
        "(defined at o.yaml:15:3)",
        "o.yaml:14:63: Invalid alias `bad`: expected `<domain>.<Name>`",
        "o.yaml:14:68: Alias `orders.CreateOrder` is the command itself",
        "o.yaml:16:15: Alias `orders.PlaceOrder` is already a command or alias "
        "(defined at o.yaml:14:15)",
    ]


def test_accepted() -> None:
    good = """cbus: 1
domain: orders
commands:
  CreateOrder:
    version: 3
    fields: {order_id: uuid}
    previous:
      2: {fields: {order_id: uuid, note: {type: string, max_length: 9}}}
      1: {fields: {order_id: string}}
    aliases: [orders.PlaceOrder]
"""
    (s,) = load_sources([("o.yaml", good)])
    cmd = s.commands[0]
    assert [p.version for p in cmd.previous] == [1, 2]
    assert [f.name for f in cmd.previous[1].fields] == ["order_id", "note"]
    assert cmd.previous[1].fields[1].constraints["max_length"] == 9
    assert [k for k, _ in cmd.aliases] == ["orders.PlaceOrder"]


def test_generated_names_collide() -> None:
    text = """cbus: 1
domain: orders
types:
  CreateOrderV1: {fields: {a: int}}
commands:
  CreateOrder:
    version: 2
    previous:
      1: {}
  UpgradeCreateOrderV1: {}
"""
    assert _errors(text) == [
        "o.yaml:9:7: Version 1 of command `CreateOrder` becomes `CreateOrderV1`, "
        "as does type `CreateOrderV1` (at 4:3)",
        "o.yaml:10:3: Command `UpgradeCreateOrderV1` becomes `upgrade_create_order_v1`, "
        "as does version 1 of command `CreateOrder` (at 9:7)",
    ]


def test_renamed_from() -> None:
    text = """cbus: 1
domain: orders
types:
  T: {fields: {a: {type: int, renamed_from: b}}}
commands:
  CreateOrder:
    version: 2
    fields: {x: {type: int, renamed_from: nope}}
    previous:
      1: {fields: {y: int}}
"""
    assert _errors(text) == [
        "o.yaml:4:16: `renamed_from` of field `a` needs the version before it "
        "under the command's `previous`",
        "o.yaml:8:14: `renamed_from: nope` of field `x`: version 1 of `CreateOrder` "
        "has no field `nope`",
    ]
