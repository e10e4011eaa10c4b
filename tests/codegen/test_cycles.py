"""Domains that refer to each other's types: the `cycles` case, both model styles.

`left` holds `right.Leaf` values in a list and a dict, `right.Leaf` holds a
`left.Node?`, and `ring` closes a cycle of three; defaults read another domain's
enum members (`right.Shade.DARK` in `left`, `left.Color.RED` in `right`) or build
another domain's struct. The modules import each other, so each must import first
in a fresh interpreter, pass ruff and `mypy --strict`, and carry values across the
domains both ways through the runtime codec.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import cbus.codec
import msgspec
import pytest

from .conftest import FakeConn, assert_lint_and_types_pass, case_package, run

DOMAINS = ("left", "right", "ring")


@dataclass
class Cycles:
    root: Path
    name: str
    left: ModuleType
    right: ModuleType
    ring: ModuleType


@pytest.fixture(scope="module", params=["dataclass", "struct"])
def cycles(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cycles]:
    with case_package(tmp_path_factory, "cycles", request.param) as (root, name):
        yield Cycles(root, name, *(importlib.import_module(f"{name}.{d}") for d in DOMAINS))


def test_ruff_and_mypy_pass(cycles: Cycles) -> None:
    assert_lint_and_types_pass(cycles.root, cycles.name)


PROBE = """\
import sys
import {pkg}.{first}
from {pkg} import left, right, ring

print(sorted(m for m in sys.modules if m.startswith("{pkg}.")))
print(left.Node(leaves=[]))
print(right.Leaf(name="a"))
print(ring.Spot(x=2))
print(left.Plant(root=left.Node(leaves=[]), by_name={{}}).leaf.color)
"""


@pytest.mark.parametrize("first", DOMAINS)
def test_each_domain_imports_first_in_a_fresh_interpreter(cycles: Cycles, first: str) -> None:
    """Whichever module Python meets first, every default reads a finished enum.

    With `--models struct`, importing `left` first creates the Struct `right.Leaf`
    while `left.Node`, which its annotation names, does not exist yet: msgspec
    resolves annotations when a decoder or encoder first needs them, not when the
    class is created.
    """
    env = {**os.environ, "PYTHONPATH": str(cycles.root)}
    out = run(
        sys.executable, "-c", PROBE.format(pkg=cycles.name, first=first), cwd=cycles.root, env=env
    )
    pkg = cycles.name
    shade, color = "<Shade.DARK: 'dark'>", "<Color.RED: 'red'>"
    assert out.splitlines() == [
        str([f"{pkg}.left", f"{pkg}.right", f"{pkg}.ring"]),
        f"Node(leaves=[], shade={shade}, spot=Spot(x=1, color=<Color.BLUE: 'blue'>), "
        "tags=[<Shade.LIGHT: 'light'>])",
        f"Leaf(name='a', node=None, more=None, color={color}, ring=None)",
        "Spot(x=2, color=<Color.BLUE: 'blue'>)",
        "Color.RED",
    ]


def _plant(c: Cycles) -> Any:
    left, right, ring = c.left, c.right, c.ring
    inner = left.Node(leaves=[right.Leaf(name="deep", color=left.Color.BLUE)], tags=[])
    leaf = right.Leaf(
        name="top",
        node=inner,
        more={"k": left.Node(leaves=[], shade=right.Shade.LIGHT)},
        ring=ring.Ring(nodes=[inner]),
    )
    return left.Plant(root=left.Node(leaves=[leaf]), by_name={"b": right.Leaf(name="b")})


def test_round_trip_crosses_domains_both_ways(cycles: Cycles) -> None:
    cmd = _plant(cycles)
    data = cbus.codec.encode(cmd)
    spot = '"spot":{"x":1,"color":"blue"}'
    deep = '{"name":"deep","node":null,"more":null,"color":"blue","ring":null}'
    inner = f'{{"leaves":[{deep}],"shade":"dark",{spot},"tags":[]}}'
    empty = f'{{"leaves":[],"shade":"light",{spot},"tags":["light"]}}'
    top = (
        f'{{"name":"top","node":{inner},"more":{{"k":{empty}}},"color":"red",'
        f'"ring":{{"nodes":[{inner}]}}}}'
    )
    b = '{"name":"b","node":null,"more":null,"color":"red","ring":null}'
    seed = '{"name":"seed","node":null,"more":null,"color":"red","ring":null}'
    assert data.decode() == (
        f'{{"root":{{"leaves":[{top}],"shade":"dark",{spot},"tags":["light"]}},'
        f'"by_name":{{"b":{b}}},"shade":"light","leaf":{seed}}}'
    )
    assert cbus.codec.decode(data, cycles.left.Plant) == cmd
    assert cbus.codec.validate(cmd) == data


def test_defaults_fill_in_on_decode(cycles: Cycles) -> None:
    left, right, ring = cycles.left, cycles.right, cycles.ring
    data = b'{"root":{"leaves":[{"name":"x","node":{"leaves":[]}}]},"by_name":{}}'
    cmd = cbus.codec.decode(data, left.Plant)
    assert cmd.shade is right.Shade.LIGHT
    assert cmd.root.leaves[0].color is left.Color.RED
    assert cmd.root.leaves[0].node.spot == ring.Spot(x=1, color=left.Color.BLUE)
    assert cbus.codec.decode(b'{"leaf":{"name":"y"}}', right.Grow).color is left.Color.BLUE


def test_constraints_of_another_domain_are_checked_at_their_path(cycles: Cycles) -> None:
    data = b'{"root":{"leaves":[{"name":"x","node":{"leaves":[{"name":""}]}}]},"by_name":{}}'
    with pytest.raises(msgspec.ValidationError) as exc:
        cbus.codec.decode(data, cycles.left.Plant)
    assert str(exc.value) == (
        "Expected `str` of length >= 1 - at `$.root.leaves[0].node.leaves[0].name`"
    )


def test_senders_and_handler_stubs(cycles: Cycles) -> None:
    left, right = cycles.left, cycles.right
    cmd = _plant(cycles)
    conn = FakeConn()
    sent = left.send_plant(conn, root=cmd.root, by_name=cmd.by_name)
    assert (sent.kind, sent.msg_id) == ("left.Plant", 7)
    (params,) = conn.params
    assert params["queue"] == "left__commands"
    assert cbus.codec.decode(params["message"], left.Plant) == cmd
    right.send_grow(conn, leaf=right.Leaf(name="x", node=cmd.root))
    assert cbus.codec.decode(conn.params[1]["message"], right.Grow).leaf.node == cmd.root
    with pytest.raises(cbus.ValidationError):
        right.send_grow(conn, leaf=right.Leaf(name=""))

    spec = left.DOMAIN.by_kind()["left.Plant"]
    assert (spec.type, spec.result_type) == (left.Plant, left.PlantResult)

    class Mine(left.LeftHandlers):  # type: ignore[misc, name-defined]
        def plant(self, cmd: Any, ctx: cbus.Context) -> Any:
            return left.PlantResult(leaf=cmd.root.leaves[0])

    ctx: Any = None
    result = Mine().plant(cmd, ctx)
    assert result.leaf.node.leaves[0].name == "deep"
    assert cbus.codec.decode(cbus.codec.encode(result), left.PlantResult) == result
    with pytest.raises(NotImplementedError, match=r"^RightHandlers.grow is not implemented$"):
        right.RightHandlers().grow(right.Grow(leaf=right.Leaf(name="x")), ctx)
