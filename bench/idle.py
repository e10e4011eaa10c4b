"""What an idle worker costs its database: transactions per second, counted by PostgreSQL.

A worker with `--domains` domains (30) at `--concurrency` (4) runs with nothing to
do; the rate is the delta of `xact_commit + xact_rollback` in `pg_stat_database`
over `--seconds`, minus this script's own reads. Each worker runs in a process of
its own; `--before PATH` runs a second one with the cbus found at PATH (for example
`/work/main/runtime`, the code before ADR 0010) against the same server, turn about.

    .venv/bin/python bench/idle.py [--seconds 20] [--before ../main/runtime]

Prints a table and writes bench/results/idle.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _stub(self: Any, cmd: Any, ctx: Any) -> None:
    raise NotImplementedError


def _noop(self: Any, cmd: Any, ctx: Any) -> None:
    pass


def many_domains(count: int) -> list[Any]:
    """`count` domains of one no-op command each, registered now, and a handler for each."""
    from cbus import api as cbus

    handlers = []
    for i in range(count):
        name = f"idle{i:02d}"
        command = dataclasses.make_dataclass("Tick", [("n", int, 0)], frozen=True, kw_only=True)
        options = cbus.Options(max_attempts=3, backoff=(1.0,), visibility_timeout=30)
        domain = cbus.register(
            cbus.DomainSpec(
                name=name,
                commands=(
                    cbus.CommandSpec(
                        domain=name,
                        name="Tick",
                        version=1,
                        type=command,
                        handler_method="tick",
                        options=options,
                    ),
                ),
                options=options,
            )
        )
        stub = type(
            f"Idle{i:02d}Handlers", (cbus.Handlers,), {"__cbus_domain__": domain, "tick": _stub}
        )
        handlers.append(type(f"Idle{i:02d}", (stub,), {"tick": _noop})())
    return handlers


def child(args: argparse.Namespace) -> None:
    """Install the domains, run a worker for `seconds`, print nothing (the parent counts)."""
    import cbus
    import psycopg

    handlers = many_domains(args.domains)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        cbus.install(conn)
        for h in handlers:
            cbus.install_domain(conn, h.__cbus_domain__)
        conn.execute("VACUUM ANALYZE")  # or autovacuum's work on the new tables is counted
    worker = cbus.Worker(args.dsn, handlers, concurrency=args.concurrency)
    import threading

    threading.Timer(args.seconds, worker.stop).start()
    print("ready", flush=True)
    worker.run()


def transactions(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def measure(dsn: str, runtime: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """Start a worker process, skip its start-up, count the transactions of a window."""
    env = dict(os.environ)
    if runtime:
        env["PYTHONPATH"] = runtime + os.pathsep + env.get("PYTHONPATH", "")
    warm = 3.0
    argv = [sys.executable, __file__, "--child", "--dsn", dsn]
    argv += ["--domains", str(args.domains), "--concurrency", str(args.concurrency)]
    argv += ["--seconds", str(warm + args.seconds + 2)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the idle worker did not start")
        time.sleep(warm)
        # Stats reach pg_stat_database when a backend flushes them (at most once a
        # second while it works): a long window makes that lag noise.
        before = transactions(dsn)
        began = time.perf_counter()
        time.sleep(args.seconds)
        after = transactions(dsn)
        elapsed = time.perf_counter() - began
    finally:
        code = proc.wait(timeout=60)
    if code != 0:
        raise RuntimeError(f"the idle worker ({runtime or 'this tree'}) exited with {code}")
    own = 2  # the read of `before`: its connection's start-up and its statement
    count = after - before - own
    return {"transactions": count, "seconds": round(elapsed, 2), "per_s": count / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dsn")
    parser.add_argument("--domains", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--before", help="a runtime/ folder holding the cbus to compare with")
    parser.add_argument("--out", default=str(BENCH / "results" / "idle.json"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    from cbus.devdb import DevServer

    rows: dict[str, dict[str, Any]] = {}
    with DevServer() as server:
        import psycopg

        for label, runtime in (("this tree", None), ("before", args.before)):
            if label == "before" and not runtime:
                continue
            name = "idle_" + label.replace(" ", "_")
            with psycopg.connect(server.dsn, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            dsn = psycopg.conninfo.make_conninfo(server.dsn, dbname=name)
            rows[label] = measure(dsn, runtime, args)
    print(f"idle worker, {args.domains} domains, concurrency {args.concurrency}, poll 1 s")
    print(f"{'cbus':<12} {'transactions':>12} {'seconds':>8} {'per s':>8}")
    for label, row in rows.items():
        print(f"{label:<12} {row['transactions']:>12} {row['seconds']:>8} {row['per_s']:>8.1f}")
    payload = {
        "command": "python bench/idle.py " + " ".join(sys.argv[1:]),
        "domains": args.domains,
        "concurrency": args.concurrency,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
