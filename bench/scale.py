"""`make bench-scale`: drains against a deep backlog and against a big command log.

Two ratios of issue 15, each measured side by side in one run on one embedded
PostgreSQL (fsync off), as `make bench` measures its rows:

- a drain of a backlog of `--backlog` commands (1,000,000) against a drain of 20,000;
- a drain of 20,000 commands with the command log already holding `--log` finished
  rows (10,000,000) against the same drain with an empty log.

Each drain is `bench/drain.py cbus` (a worker at concurrency 4, a no-op handler, a
process of its own) and is preceded by a floor drain (raw read(100) + delete of
20,000 messages) seconds before it; a case's figure is its rate divided by that
floor's, so the machine's drift (these cores are shared) cancels out of the ratio.

Backlogs and finished rows are written server-side, in the shape cbus writes them
(`fill_backlog`, `fill_log`: one INSERT ... SELECT generate_series each), since
sending a million commands through the sender would take the run's whole budget.

    make bench-scale                             # 1M backlog, 10M-row log: ~15-25 min
    make bench-scale SCALE_ARGS=--quick          # 100k backlog, 1M-row log: ~3 min

Prints a table and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import env
import floor
import sends
from cbus.devdb import DevServer

SMALL = 20_000  # the reference drain, and the drain against the big log

# A command id as cbus draws it (`cbus._ids`): a version 7 UUID, the milliseconds of
# `at` and then random bits (those of a gen_random_uuid() past its version nibble).
UUID7 = (
    "(lpad(to_hex((extract(epoch FROM {at}) * 1000)::bigint), 12, '0') || '7' "
    "|| substr(replace(gen_random_uuid()::text, '-', ''), 14, 19))::uuid"
)

# The message and headers cbus's sender writes for bench.Ping (send / send_many),
# and its PENDING log row with the msg_id drawn from the queue's sequence.
FILL_BACKLOG = """
WITH ids AS (
    SELECT i, {command_id} AS command_id,
           nextval(pg_get_serial_sequence('pgmq.q_bench__commands', 'msg_id')) AS msg_id
    FROM generate_series(1, %(n)s) AS i
),
logged AS (
    INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,
                              correlation_id, msg_id)
    SELECT 'bench', command_id, 'bench.Ping', 1, 'PENDING', 5, command_id, msg_id FROM ids
)
INSERT INTO pgmq.q_bench__commands (msg_id, vt, message, headers) OVERRIDING SYSTEM VALUE
SELECT msg_id, clock_timestamp() - interval '1 second',
       jsonb_build_object('seq', i, 'note', null, 'amount', '19.99',
                          'order_id', gen_random_uuid(), 'customer_id', 'customer-' || i %% 97),
       jsonb_build_object('kind', 'bench.Ping', 'version', 1, 'command_id', command_id,
                          'correlation_id', command_id)
FROM ids ORDER BY msg_id
""".replace("{command_id}", UUID7.format(at="clock_timestamp()"))

# Finished commands as the acknowledgement leaves them (COMPLETED, attempts 1, the
# msg_id they ran as, finished over the past days, ids drawn then), in the
# benchmark's domain.
FILL_LOG = """
INSERT INTO cbus.command (domain, command_id, kind, version, status, attempts, max_attempts,
                          msg_id, correlation_id, created_at, updated_at, finished_at)
SELECT 'bench', id, 'bench.Ping', 1, 'COMPLETED', 1, 5, -i, id, at, at, at
FROM (SELECT i, {id} AS id, at
      FROM (SELECT i, clock_timestamp() - make_interval(secs => (%(n)s - i) / 100.0) AS at
            FROM generate_series(1, %(n)s) AS i) AS t) AS g
""".replace("{id}", UUID7.format(at="at"))

# Rebuilt after the fill: building an index sorts once, where 10M inserts into a
# random-uuid btree take many times longer. Same names, same definitions.
LOG_INDEXES = (
    ("ALTER TABLE cbus.command DROP CONSTRAINT command_pkey", "ALTER TABLE cbus.command "
     "ADD CONSTRAINT command_pkey PRIMARY KEY (domain, command_id)"),
    ("DROP INDEX cbus.command_correlation",
     "CREATE INDEX command_correlation ON cbus.command (correlation_id)"),
)  # fmt: skip


def fill_backlog(dsn: str, n: int) -> float:
    """n PENDING commands on the benchmark queue, logged; returns the seconds it took."""
    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FILL_BACKLOG, {"n": n})
    env.settle(dsn)
    return time.perf_counter() - start


def fill_log(dsn: str, n: int) -> float:
    """n COMPLETED commands in cbus.command, then VACUUM ANALYZE; returns the seconds."""
    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        for drop, _ in LOG_INDEXES:
            conn.execute(drop)
        conn.execute(FILL_LOG, {"n": n})
        for _, create in LOG_INDEXES:
            conn.execute(create)
        conn.execute("VACUUM ANALYZE cbus.command")
    env.settle(dsn)
    return time.perf_counter() - start


def sizes(dsn: str) -> dict[str, int]:
    """Bytes of the command log and the queue, indexes included."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('cbus.command'),"
            " pg_total_relation_size('pgmq.q_bench__commands')"
        ).fetchone()
    assert row is not None
    return {"command_bytes": int(row[0]), "queue_bytes": int(row[1])}


class Scale:
    def __init__(self, dsn: str, gen_dir: Path, bench: Any) -> None:
        self.dsn, self.gen_dir, self.bench = dsn, gen_dir, bench
        self.runs: list[dict[str, Any]] = []

    def drain(self, case: str, n: int, *, backlog: int = 0, log: int = 0) -> dict[str, Any]:
        """A floor drain, then a worker drain of n commands already on the queue."""
        base = floor.read_delete(self.dsn, SMALL, 100)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE pgmq.q_raw_floor, pgmq.a_raw_floor")
        if backlog:
            fill_s = fill_backlog(self.dsn, backlog)
        else:
            fill_s = 0.0
            sends.fill(self.dsn, self.bench, n)
        argv = [sys.executable, str(env.BENCH / "drain.py"), "cbus", "--dsn", self.dsn]
        argv += ["--gen-dir", str(self.gen_dir), "--n", str(n), "--concurrency", "4"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"drain failed:\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        with psycopg.connect(self.dsn) as conn:
            left = env.queue_depth(conn, env.QUEUE)
        if out["completed"] != n or left:
            raise RuntimeError(f"{case}: completed {out['completed']} of {n}, {left} left")
        run = {
            "case": case,
            "n": n,
            "log_rows": log,
            "rate": n / out["elapsed"],
            "floor": base,
            "relative": n / out["elapsed"] / base,
            "fill_s": round(fill_s, 1),
            **sizes(self.dsn),
        }
        self.runs.append(run)
        print(
            f"    {case:<34} {run['rate']:>9,.0f}/s  floor {base:>9,.0f}/s "
            f" {run['relative']:.2f}x of it",
            flush=True,
        )
        return run


def ratio(runs: list[dict[str, Any]], case: str, base: str) -> float:
    """The case's rate relative to its floor, over the base case's (medians of the runs)."""
    mine = statistics.median(r["relative"] for r in runs if r["case"] == case)
    theirs = statistics.median(r["relative"] for r in runs if r["case"] == base)
    return mine / theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="--backlog 100000 --log 1000000")
    parser.add_argument("--backlog", type=int, help="deep backlog (default 1,000,000)")
    parser.add_argument("--log", type=int, help="finished rows in the log (default 10,000,000)")
    parser.add_argument("--only", default="backlog,log", help="backlog, log or both")
    parser.add_argument("--out", default=str(env.BENCH / "results" / "scale.json"))
    args = parser.parse_args()
    backlog = args.backlog or (100_000 if args.quick else 1_000_000)
    log_rows = args.log or (1_000_000 if args.quick else 10_000_000)
    only = set(args.only.split(","))
    started = time.perf_counter()
    load_before = os.getloadavg()
    targets: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cbus-scale-") as tmp, DevServer() as server:
        dsn = server.dsn
        gen_dir = env.generate(Path(tmp) / "gen")
        bench = env.import_bench(gen_dir)
        env.install(dsn, bench)
        s = Scale(dsn, gen_dir, bench)
        print(f"backlog {backlog:,}, log {log_rows:,} rows", flush=True)
        if "backlog" in only:
            # The small drain before and after the deep one: the drift of the machine
            # lands on both sides of the ratio.
            small, deep = f"backlog {SMALL:,}", f"backlog {backlog:,}"
            env.reset(dsn)
            s.drain(small, SMALL, backlog=SMALL)
            env.reset(dsn)
            s.drain(deep, backlog, backlog=backlog)
            env.reset(dsn)
            s.drain(small, SMALL, backlog=SMALL)
            targets.append(
                {
                    "target": f"drain, backlog {backlog:,} / backlog {SMALL:,}",
                    "ratio": ratio(s.runs, deep, small),
                    "goal": 0.9,
                }
            )
        if "log" in only:
            empty, big = "log empty", f"log {log_rows:,} finished rows"
            env.reset(dsn)
            # The log keeps what each drain completed (20,000 rows a drain): next to
            # the fill, noise.
            s.drain(empty, SMALL)
            s.drain(empty, SMALL)
            print(f"    filling the log with {log_rows:,} rows ...", flush=True)
            fill_s = fill_log(dsn, log_rows)
            print(f"    filled in {fill_s:.0f} s", flush=True)
            s.drain(big, SMALL, log=log_rows)
            s.drain(big, SMALL, log=log_rows)
            targets.append(
                {
                    "target": f"drain, log of {log_rows:,} rows / empty log",
                    "ratio": ratio(s.runs, big, empty),
                    "goal": 0.9,
                    "fill_s": round(fill_s, 1),
                }
            )
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
            pg_version = row[0] if row else "?"
    for t in targets:
        t["pass"] = bool(t["ratio"] >= t["goal"])
    print()
    print(f"{'target':<52} {'ratio':>8}  goal")
    print("-" * 80)
    for t in targets:
        mark = "pass" if t["pass"] else "MISS"
        print(f"{t['target']:<52} {t['ratio']:7.2f}x  >= {t['goal']}x  {mark}")
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(f"\n{elapsed:.0f} s; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    given = " ".join(sys.argv[1:])
    command = "make bench-scale" + (f" SCALE_ARGS='{given}'" if given else "")
    payload = {
        "command": command,
        "backlog": backlog,
        "log_rows": log_rows,
        "elapsed_s": round(elapsed, 1),
        "machine": {
            **env.machine(),
            "postgresql": pg_version,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "runs": s.runs,
        "targets": targets,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
