"""Domains that refer to each other's types, sent and handled on a real PostgreSQL.

The `cycles` case of the cbgen tests (`left` <-> `right`, and `ring`) is generated
with the `cbgen` command; a `left.Plant` whose value holds `right.Leaf` values that
hold `left.Node` values again goes through a sender, the queue, the worker and the
handler's result, and the handler sends a `right.Grow` on in its transaction.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest

from .helpers import drain

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "tests" / "codegen" / "cases" / "cycles"


@pytest.fixture(scope="module")
def cycles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    out = tmp_path_factory.mktemp("cycles")
    cbgen = Path(sys.executable).with_name("cbgen")
    subprocess.run(
        [str(cbgen), "generate", str(CASE), "--out", str(out), "--package", "cyclespkg"],
        check=True,
        cwd=ROOT,
    )
    sys.path.insert(0, str(out))
    try:
        # `right` first: it imports `left`, which imports `right` back.
        right = importlib.import_module("cyclespkg.right")
        yield {
            "right": right,
            **{d: importlib.import_module(f"cyclespkg.{d}") for d in ("left", "ring")},
        }
    finally:
        sys.path.remove(str(out))


def test_a_value_crossing_domains_is_sent_handled_and_answered(
    dsn: str, conn: psycopg.Connection[Any], cycles: dict[str, ModuleType]
) -> None:
    left, right, ring = cycles["left"], cycles["right"], cycles["ring"]
    for module in (left, right, ring):
        module.install(conn)
    conn.commit()
    inner = left.Node(leaves=[right.Leaf(name="deep")])
    root = left.Node(leaves=[right.Leaf(name="top", node=inner, ring=ring.Ring(nodes=[inner]))])
    sent = left.send_plant(conn, root=root, by_name={"b": right.Leaf(name="b")})
    conn.commit()

    seen: list[Any] = []

    class Left(left.LeftHandlers):  # type: ignore[misc, name-defined]
        def plant(self, cmd: Any, ctx: cbus.Context) -> Any:
            seen.append(cmd)
            leaf = cmd.root.leaves[0]
            right.send_grow(ctx, leaf=leaf, color=left.Color.RED)
            return left.PlantResult(leaf=leaf)

    class Right(right.RightHandlers):  # type: ignore[misc, name-defined]
        def grow(self, cmd: Any, ctx: cbus.Context) -> None:
            seen.append(cmd)

    drain(dsn, [Left(), Right()])

    assert seen == [
        left.Plant(root=root, by_name={"b": right.Leaf(name="b")}),
        right.Grow(leaf=root.leaves[0], color=left.Color.RED),
    ]
    record = cbus.get_command(conn, "left", sent.command_id)
    assert record is not None and record.status == "COMPLETED"
    assert left.plant_result(record) == left.PlantResult(leaf=root.leaves[0])
