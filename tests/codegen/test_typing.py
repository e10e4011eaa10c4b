"""The generated code under `ruff` and `mypy --strict`, for both model styles.

mypy runs once per style over the generated kitchen package and a usage module whose
`# type: ignore[...]` lines must each hide a real error (strict mode reports unused
ignores), so the senders and stubs are checked to accept and to refuse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cbus

from .conftest import Generated

USAGE = """\
from __future__ import annotations

import uuid
from typing import Any

import cbus
import cbus.registry
import psycopg

import {pkg}
from {pkg} import extra, kitchen


def use(conn: psycopg.Connection[Any], bus: cbus.Bus) -> cbus.SendResult:
    kitchen.send_empty(bus, command_id=uuid.uuid4(), correlation_id=None, delay=1.5)
    extra.send_ping(conn, tag=extra.Tag(name="x"), reply_to="replies")
    extra.send_ping(conn, tag="x")  # type: ignore[arg-type]
    extra.send_ping(conn)  # type: ignore[call-arg]
    kitchen.send_empty(conn, delay="soon")  # type: ignore[arg-type]
    return kitchen.send_empty(conn)


async def use_async(aconn: psycopg.AsyncConnection[Any]) -> cbus.SendResult:
    await extra.send_ping_async(aconn, tag=extra.Tag(name="x", weight=2))
    return await kitchen.send_empty_async(aconn)


# A default built per command is left out, or given a value of the field's own type:
# None only where the schema says `T?`, or for `any`, which holds null.
def use_defaults(conn: psycopg.Connection[Any]) -> None:
    extra.send_tally(conn, n=1)
    extra.send_tally(
        conn,
        n=1,
        counts={{"b": 2}},
        items=[3],
        tag=extra.Tag(name="u"),
        ref=uuid.uuid4(),
        blob=None,
        none=None,
        one=None,
        maybe=None,
    )
    extra.send_tally(conn, n=1, counts=None)  # type: ignore[arg-type]
    extra.send_tally(conn, n=1, items=None)  # type: ignore[arg-type]
    extra.send_tally(conn, n=1, tag=None)  # type: ignore[arg-type]
    extra.send_tally(conn, n=1, ref=None)  # type: ignore[arg-type]
    extra.send_tally(conn, n=1, counts=cbus.registry.DEFAULT)  # type: ignore[arg-type]
    extra.send_tally(conn, counts={{}})  # type: ignore[call-arg]


async def use_defaults_async(aconn: psycopg.AsyncConnection[Any]) -> None:
    await extra.send_tally_async(aconn, n=1)
    await extra.send_tally_async(aconn, n=1, blob=None, maybe={{"a": 1}})
    await extra.send_tally_async(aconn, n=1, counts=None)  # type: ignore[arg-type]
    await extra.send_tally_async(aconn, n=1, tag=None)  # type: ignore[arg-type]


class Mine(kitchen.KitchenHandlers):
    def everything(self, cmd: kitchen.Everything, ctx: cbus.Context) -> kitchen.EverythingResult:
        if cmd.i > 10:
            raise kitchen.EverythingError.too_hot("too hot", {{"i": cmd.i}})
        return kitchen.EverythingResult(ok=cmd.b, echo=cmd.p)


class MineAsync(kitchen.KitchenAsyncHandlers):
    async def empty(self, cmd: kitchen.Empty, ctx: cbus.AsyncContext) -> None:
        await ctx.conn.execute("select 1")


class Wrong(kitchen.KitchenHandlers):
    def everything(  # type: ignore[override]
        self, cmd: kitchen.Everything, ctx: cbus.Context
    ) -> None:
        return None


# The package imports its domains lazily; type checkers still see each one, and
# nothing else.
point: kitchen.Point = {pkg}.kitchen.Point(x=1.0, y=2.0)
{pkg}.kitchn.Point(x=1.0, y=2.0)  # type: ignore[attr-defined]
from {pkg} import Point  # type: ignore[attr-defined]  # noqa: E402

# The runtime's records and replies: statuses and outcomes are literals, typed results.
def read_back(conn: psycopg.Connection[Any], reply: cbus.Reply) -> kitchen.EverythingResult | None:
    record = cbus.get_command(conn, "kitchen", uuid.uuid4())
    assert record is not None
    if record.status == "DONE":  # type: ignore[comparison-overlap]
        pass
    if reply.outcome == "OK":  # type: ignore[comparison-overlap]
        pass
    result = record.result_as(kitchen.EverythingResult)
    wrong: kitchen.Point | None = result  # type: ignore[assignment]
    cbus.Worker("", [object()])  # type: ignore[list-item]
    cbus.Worker("", [Mine()], concurency=2)  # type: ignore[call-arg]
    return record.result_as(kitchen.EverythingResult)


code: kitchen.EverythingError = kitchen.EverythingError("A1")
kitchen.EverythingError("NOPE")  # type: ignore[arg-type]
kitchen.Point(x=1.0)  # type: ignore[call-arg]
"""


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def _ruff() -> str:
    return str(Path(sys.executable).parent / "ruff")


def test_ruff_passes(generated: Generated) -> None:
    """With the repository's rule set (E, B, UP, SIM, RUF, ...), copied beside the package."""
    root = generated.root / generated.name
    _run(_ruff(), "check", "--no-cache", ".", cwd=root)
    _run(_ruff(), "format", "--check", "--no-cache", ".", cwd=root)


def test_mypy_strict(generated: Generated) -> None:
    root = generated.root
    (root / f"usage_{generated.models}.py").write_text(USAGE.format(pkg=generated.name))
    runtime = Path(cbus.__file__).resolve().parents[1]
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(runtime), str(root)])}
    out = _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--python-version",
        "3.11",
        "--follow-imports",
        "silent",
        "--cache-dir",
        str(root / ".mypy_cache"),
        "--no-error-summary",
        "-p",
        generated.name,
        "-m",
        f"usage_{generated.models}",
        cwd=root,
        env=env,
    )
    assert out == ""
