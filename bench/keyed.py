"""Ordering keys (ADR 0011): a keyed domain's throughput, the plain domain's cost, the lease.

Three tables, all against one embedded PostgreSQL:

1. Drain: N commands sent one per autocommit transaction, then drained by one
   worker (concurrency 4, no-op handler), each case in a process of its own:
   the plain `bench` domain with this tree's cbus and with `main`'s (`git archive
   main runtime`: no regression for a domain that uses none of this), and the keyed
   `bkeyed` domain with 1,000 keys (and 20), at each `--keyed-batch`. Rounds
   alternate the cases; the rows are medians, with ratios to this tree's plain case.
2. Lease: one lease of 10 from a queue of `--lease-rows` keyed messages over
   `--keys` keys, as statements in a transaction rolled back, median of 30: cbus's
   keyed lease (head probe + archive probe), a `DISTINCT ON (key)` head scan, PGMQ
   1.13's `pgmq.read_grouped_head` (when the server's PGMQ has it), and the plain
   lease that orders nothing, with no message leased and with half the keys (at most 500) leased.

    .venv/bin/python bench/keyed.py [--n 3000] [--rounds 3] [--keys 1000]

JSON goes to bench/results/keyed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

PACKAGE = "cbus_bench"
KEYED_QUEUE = "bkeyed__commands"


def generate(out: Path) -> Path:
    cbgen = Path(sys.executable).with_name("cbgen")
    schemas = [str(BENCH / "schemas" / "bench.yaml"), str(BENCH / "schemas" / "keyed.yaml")]
    subprocess.run(
        [str(cbgen), "generate", *schemas, "--out", str(out), "--package", PACKAGE],
        check=True,
        capture_output=True,
    )
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    import importlib

    import cbus
    import psycopg
    from env import ping_kwargs

    sys.path.insert(0, args.gen_dir)
    module = importlib.import_module(f"{PACKAGE}.{args.domain}")
    if args.keyed_batch:
        from cbus import _worker_domain

        _worker_domain.KEYED_BATCH = args.keyed_batch  # type: ignore[attr-defined]
    send = module.send_ping
    extra: list[dict[str, Any]] = [{} for _ in range(args.n)]
    if args.domain == "bkeyed":
        extra = [{"account": f"a{i % args.keys}"} for i in range(args.n)]
    kwargs = [{**ping_kwargs(i), **extra[i]} for i in range(args.n)]
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for k in kwargs:
            send(conn, **k)
        sent = time.perf_counter() - start

    handlers = module.BenchHandlers if args.domain == "bench" else module.BkeyedHandlers

    class Handler(handlers):  # type: ignore[misc,valid-type]
        def ping(self, cmd: Any, ctx: Any) -> None:
            pass

    worker = cbus.Worker(args.dsn, [Handler()], concurrency=4, poll_interval=0.05)
    start = time.perf_counter()
    worker.run(until_idle=True)
    drained = time.perf_counter() - start
    assert worker.completed == args.n, (worker.completed, args.n)
    return {"send": args.n / sent, "drain": args.n / drained, "cbus": cbus.__file__}


def run_child(case: dict[str, Any], dsn: str, gen_dir: Path, n: int, main_rt: Path) -> Any:
    import os

    argv = [sys.executable, __file__, "child", "--dsn", dsn, "--gen-dir", str(gen_dir)]
    argv += ["--n", str(n), "--domain", case["domain"], "--keys", str(case.get("keys", 0))]
    argv += ["--keyed-batch", str(case.get("batch", 0))]
    env = dict(os.environ)
    if case["code"] == "main":
        env["PYTHONPATH"] = str(main_rt)
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (case["code"] == "main") == result["cbus"].startswith(str(main_rt)), result
    return result


def reset(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE pgmq.q_bench__commands, pgmq.a_bench__commands, pgmq.q_bkeyed__commands,"
            " pgmq.a_bkeyed__commands, cbus.command, cbus.audit"
        )
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


# The alternatives the lease table compares, as `leasable` CTEs of one statement.
DISTINCT_ON = """
WITH heads AS (
    SELECT DISTINCT ON (headers ->> 'ordering_key') msg_id, vt, headers ->> 'ordering_key' AS k
    FROM {q} WHERE headers ->> 'ordering_key' IS NOT NULL
    ORDER BY headers ->> 'ordering_key', msg_id
),
leasable AS (
    SELECT l.msg_id FROM {q} AS l
    WHERE l.vt <= clock_timestamp() AND l.msg_id IN (
        SELECT h.msg_id FROM heads AS h WHERE h.vt <= clock_timestamp() AND NOT EXISTS (
            SELECT 1 FROM {a} AS b JOIN cbus.command AS c
              ON c.domain = 'bkeyed' AND c.command_id = cbus.as_uuid(b.headers ->> 'command_id')
            WHERE b.headers ->> 'ordering_key' = h.k AND b.msg_id < h.msg_id
              AND c.status = 'IN_TROUBLESHOOTING_QUEUE'))
    ORDER BY l.vt LIMIT 10 FOR UPDATE SKIP LOCKED
)
UPDATE {q} AS q SET vt = clock_timestamp() + interval '30 s', read_ct = q.read_ct + 1
FROM leasable WHERE q.msg_id = leasable.msg_id
RETURNING q.msg_id
"""


def _noop(self: Any, cmd: Any, ctx: Any) -> None:
    pass


def lease_table(dsn: str, gen_dir: Path, rows: int, keys: int) -> list[dict[str, Any]]:
    import importlib

    import cbus
    import psycopg
    from cbus._queries import query, raw
    from cbus._worker_domain import DomainRuntime
    from env import ping_kwargs
    from psycopg import sql

    sys.path.insert(0, str(gen_dir))
    module = importlib.import_module(f"{PACKAGE}.bkeyed")
    q_table = sql.Identifier("pgmq", "q_" + KEYED_QUEUE)
    reset(dsn)
    with psycopg.connect(dsn) as conn:
        for at in range(0, rows, 1000):
            cbus.send_many(
                conn,
                [
                    module.Ping(**ping_kwargs(i), account=f"a{i % keys}")
                    for i in range(at, min(rows, at + 1000))
                ],
            )
            conn.commit()
        # PGMQ's grouping reads its own header: give every message its key there too.
        conn.execute(
            "UPDATE pgmq.q_bkeyed__commands SET headers = headers"
            " || jsonb_build_object('x-pgmq-group', headers ->> 'ordering_key')"
        )
        grouped = conn.execute(
            "SELECT to_regproc('pgmq.read_grouped_head') IS NOT NULL"
        ).fetchone()[0]  # type: ignore[index]
        if grouped:
            conn.execute("SELECT pgmq.create_fifo_index(%s)", (KEYED_QUEUE,))
        # And the priority lease's index, for its row (bkeyed declares no priority).
        index = sql.Identifier(f"q_{KEYED_QUEUE}_cbus_prio")
        conn.execute(sql.SQL(raw("index_priority")).format(q=q_table, name=index))
        conn.commit()
    runtime = DomainRuntime.of(type("H", (module.BkeyedHandlers,), {"ping": _noop})())
    params = runtime.read_params(False)
    q = sql.Identifier("pgmq", "q_" + KEYED_QUEUE)
    a = sql.Identifier("pgmq", "a_" + KEYED_QUEUE)
    cases: list[tuple[str, Any, Any]] = [
        ("cbus keyed lease (head + archive probes)", query("read_keyed", KEYED_QUEUE, 10), params),
        ("DISTINCT ON (key) heads", sql.SQL(DISTINCT_ON).format(q=q, a=a), None),
        ("plain lease (orders nothing)", query("read", KEYED_QUEUE, 10), params),
        ("priority lease (no key)", query("read_priority", KEYED_QUEUE, 10), params),
    ]
    if grouped:
        cases.append(
            (
                "pgmq.read_grouped_head (PGMQ 1.13)",
                sql.SQL("SELECT * FROM pgmq.read_grouped_head({}, 30, 10)").format(
                    sql.Literal(KEYED_QUEUE)
                ),
                None,
            )
        )
    out: list[dict[str, Any]] = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("VACUUM ANALYZE")
    for leased in (0, min(500, keys // 2)):
        if leased:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for _ in range(leased // 10):
                    conn.execute(query("read_keyed", KEYED_QUEUE, 10), params)
        with psycopg.connect(dsn) as conn:
            for name, stmt, p in cases:
                times = []
                for _ in range(30):
                    start = time.perf_counter()
                    got = conn.execute(stmt, p).fetchall()
                    times.append((time.perf_counter() - start) * 1000)
                    conn.rollback()
                assert len(got) == 10, (name, len(got))
                out.append({"case": name, "leased": leased, "ms": statistics.median(times)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("--dsn")
    parser.add_argument("--gen-dir")
    parser.add_argument("--domain", default="bench")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--keyed-batch", default="1,8")
    parser.add_argument("--lease-rows", type=int, default=20000)
    args = parser.parse_args()
    if args.what == "child":
        args.keyed_batch = int(args.keyed_batch)
        print(json.dumps(child(args)))
        return

    from cbus.devdb import DevServer

    batches = [int(b) for b in args.keyed_batch.split(",")]
    cases: list[dict[str, Any]] = [
        {"name": "plain domain, main's cbus", "code": "main", "domain": "bench"},
        {"name": "plain domain, this cbus", "code": "branch", "domain": "bench"},
    ]
    for keys in (args.keys, 20):
        for b in batches:
            cases.append(
                {
                    "name": f"keyed domain, {keys} keys, keyed batch {b}",
                    "code": "branch",
                    "domain": "bkeyed",
                    "keys": keys,
                    "batch": b,
                }
            )
    seen: dict[str, list[dict[str, Any]]] = {c["name"]: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="cbus-bench-keyed-") as tmp, DevServer() as server:
        tmp_path = Path(tmp)
        gen_dir = generate(tmp_path / "gen")
        main_rt = tmp_path / "main"
        main_rt.mkdir()
        archive = subprocess.run(
            ["git", "archive", "main", "runtime"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(main_rt)], input=archive, check=True)
        main_rt = main_rt / "runtime"
        sys.path.insert(0, str(gen_dir))
        import importlib

        import cbus
        import psycopg

        with psycopg.connect(server.dsn, autocommit=True) as conn:
            cbus.install(conn)
            for d in ("bench", "bkeyed"):
                importlib.import_module(f"{PACKAGE}.{d}").install(conn)
        for _ in range(args.rounds):
            for case in cases:
                reset(server.dsn)
                seen[case["name"]].append(run_child(case, server.dsn, gen_dir, args.n, main_rt))
        leases = lease_table(server.dsn, gen_dir, args.lease_rows, args.keys)
    base = {w: statistics.median(r[w] for r in seen[cases[1]["name"]]) for w in ("send", "drain")}
    rows = []
    print(f"{'case':<44} {'send/s':>8} {'ratio':>6} {'drain/s':>8} {'ratio':>6}")
    for case in cases:
        med = {w: statistics.median(r[w] for r in seen[case["name"]]) for w in ("send", "drain")}
        ratio = {w: med[w] / base[w] for w in med}
        rows.append(
            {
                "case": case["name"],
                **med,
                "send_ratio": ratio["send"],
                "drain_ratio": ratio["drain"],
                "runs": seen[case["name"]],
            }
        )
        print(
            f"{case['name']:<44} {med['send']:8.0f} {ratio['send']:6.2f}"
            f" {med['drain']:8.0f} {ratio['drain']:6.2f}"
        )
    print()
    print(f"lease of 10, {args.lease_rows} messages over {args.keys} keys (ms, median of 30)")
    held = max(r["leased"] for r in leases)
    print(f"{'case':<44} {'0 leased':>9} {f'{held} leased':>11}")
    for name in dict.fromkeys(r["case"] for r in leases):
        ms = {r["leased"]: r["ms"] for r in leases if r["case"] == name}
        print(f"{name:<44} {ms[0]:9.2f} {ms[held]:11.2f}")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / "keyed.json").write_text(
        json.dumps(
            {
                "n": args.n,
                "rounds": args.rounds,
                "keys": args.keys,
                "drain": rows,
                "lease": leases,
                "lease_rows": args.lease_rows,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {results / 'keyed.json'}")


if __name__ == "__main__":
    main()
