"""What every benchmark case shares: the server, the generated package, payloads, timing.

One embedded PostgreSQL (`cbus.devdb.DevServer`, fsync off) serves the whole run, so
every number in a table is measured against the same server and can be compared as
a ratio. The benchmark's command, `bench.Ping`, is generated from
`bench/schemas/bench.yaml` by the `cbgen` command into a temporary folder.
"""

from __future__ import annotations

import decimal
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg

BENCH = Path(__file__).resolve().parent
SCHEMA = BENCH / "schemas" / "bench.yaml"
PACKAGE = "cbus_bench"
QUEUE = "bench__commands"  # the cbus domain `bench`
RAW_QUEUE = "raw_floor"  # the floor's queue, plain PGMQ

# Tables a handler or a business transaction writes; emptied between cases.
SETUP_SQL = """
CREATE TABLE IF NOT EXISTS bench_effect (command_id uuid PRIMARY KEY, seq int NOT NULL);
CREATE TABLE IF NOT EXISTS bench_business (order_id uuid PRIMARY KEY, customer_id text NOT NULL,
                                           amount numeric NOT NULL);
"""


def generate(out: Path) -> Path:
    """Run `cbgen generate` on the benchmark schema; returns the folder to put on sys.path."""
    cbgen = Path(sys.executable).with_name("cbgen")
    proc = subprocess.run(
        [str(cbgen), "generate", str(SCHEMA), "--out", str(out), "--package", PACKAGE],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cbgen failed on {SCHEMA}:\n{proc.stdout}{proc.stderr}")
    return out


def import_bench(gen_dir: Path | str) -> Any:
    """The generated `cbus_bench.bench` module."""
    if str(gen_dir) not in sys.path:
        sys.path.insert(0, str(gen_dir))
    import importlib

    return importlib.import_module(f"{PACKAGE}.bench")


def ping_kwargs(seq: int) -> dict[str, Any]:
    """The fields of one benchmark command: about 120 bytes of JSON."""
    return {
        "seq": seq,
        "order_id": uuid.uuid4(),
        "customer_id": f"customer-{seq % 97}",
        "amount": decimal.Decimal("19.99"),
    }


_encoder = msgspec.json.Encoder(decimal_format="string")


def raw_message(seq: int) -> tuple[str, str]:
    """A floor message and its headers, the same JSON a cbus sender writes."""
    message = _encoder.encode(ping_kwargs(seq)).decode()
    command_id = str(uuid.uuid4())
    headers = _encoder.encode(
        {"kind": "bench.Ping", "version": 1, "command_id": command_id, "correlation_id": command_id}
    ).decode()
    return message, headers


def install(dsn: str, bench: Any) -> None:
    """PGMQ, cbus, the benchmark domain, the floor's queue and the handler tables."""
    import cbus

    with psycopg.connect(dsn, autocommit=True) as conn:
        cbus.install(conn)
        bench.install(conn)
        conn.execute("SELECT pgmq.create(%s)", (RAW_QUEUE,))
        conn.execute(SETUP_SQL)


def reset(dsn: str) -> None:
    """Empty the queues, the command log and the handler tables: each case starts clean."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"TRUNCATE pgmq.q_{QUEUE}, pgmq.a_{QUEUE}, pgmq.q_{RAW_QUEUE}, pgmq.a_{RAW_QUEUE},"
            " cbus.command, cbus.audit, cbus.batch, bench_effect, bench_business"
        )
        conn.execute("VACUUM ANALYZE")


def settle(dsn: str) -> None:
    """After a fill: vacuum, analyze and checkpoint now, so none of it lands in a timing."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def queue_depth(conn: psycopg.Connection[Any], queue: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM pgmq.q_{queue}").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Result:
    """One case: its rate (median of its runs) and whatever else it measured."""

    name: str
    section: str
    unit: str = "ops/s"
    runs: list[float] = field(default_factory=list)
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def value(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "value": round(self.value, 3),
            "unit": self.unit,
            "runs": [round(r, 3) for r in self.runs],
            "n": self.n,
            "note": self.note,
            **self.extra,
        }


@dataclass
class Case:
    """A measurement to repeat: `fn` runs it once and returns its value (and extras)."""

    name: str
    section: str
    n: int
    fn: Callable[[], Any]  # a value, (value, extras), or {output name: value}
    unit: str = "ops/s"
    clean: bool = True  # empty the queues and tables before each run
    outputs: dict[str, str] = field(default_factory=dict)  # name -> section, for a dict fn


def rounds(
    dsn: str, cases: list[Case], repeat: int, report: Callable[[Result], Any]
) -> list[Result]:
    """Run every case once per round, `repeat` rounds; `report` sees each new run.

    Round-robin rather than case after case: a slow minute on a shared machine then
    lands on every case of a round instead of on one case, so ratios stay honest.
    """
    results: dict[str, Result] = {}
    for case in cases:
        for name, section in (case.outputs or {case.name: case.section}).items():
            results[name] = Result(name, section, unit=case.unit, n=case.n)
    for i in range(repeat):
        if repeat > 1:
            print(f"  round {i + 1}/{repeat}", flush=True)
        for case in cases:
            if case.clean:
                reset(dsn)
            out = case.fn()
            if case.outputs:
                for name in case.outputs:
                    results[name].runs.append(out[name])
                    report(results[name])
                continue
            value, extra = out if isinstance(out, tuple) else (out, {})
            result = results[case.name]
            result.runs.append(value)
            for key, item in extra.items():
                result.extra.setdefault(key, []).append(item)
            report(result)
    return list(results.values())


def interleave(
    ops: dict[str, Callable[[int], None]], n: int, *, block: int, step: int
) -> dict[str, float]:
    """Run n operations of each kind, a block of each in turn; returns each one's rate.

    `op(i)` handles items i .. i + step; each op has its own connection. Taking turns
    every `block` items means a slow second on a shared machine costs every kind
    alike, so the ratios between them hold even when the rates wander.
    """
    spent = dict.fromkeys(ops, 0.0)
    for start in range(0, n, block):
        for name, op in ops.items():
            began = time.perf_counter()
            for i in range(start, min(start + block, n), step):
                op(i)
            spent[name] += time.perf_counter() - began
    return {name: n / seconds for name, seconds in spent.items()}


def rate(n: int, fn: Callable[[], None]) -> float:
    """Operations per second of `fn`, which performs n operations."""
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import cbus

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "psycopg": psycopg.__version__,
        "msgspec": msgspec.__version__,
        "cbus": cbus.__version__,
    }
