"""`make soak`: a steady load of concurrent senders and workers, for a set time, with retention.

Senders and workers are processes of their own, on one embedded PostgreSQL (fsync
off). Senders send `bench.Ping` one command per transaction at a steady rate in all
(`--rate`); workers run `cbus.Worker(...).run()` with a handler that writes one row
(its command's `seq`, primary key) in the command's transaction, so a command that
completed twice would fail on it. Finished commands are kept `--retention` seconds.

Every minute it prints, and writes to JSON: throughput (handler rows committed in
that minute), latency from send to completion (p50, p99: `created_at` to
`finished_at` of the commands that completed in that minute), the queue's depth, and
the size of the command log, the audit trail, the queue and PGMQ's archive with
their indexes (`pg_total_relation_size`). At the end it checks issue 15's targets:

- throughput in the last tenth of the sending time within 10% of the first tenth;
- every table's size, after the first retention period, within 1.5x of its size
  then (plus 1 MB, so a near-empty table does not fail on a page or two); the
  period ends a minute after the retention, when autovacuum (its naptime is a
  minute) has made the pruned rows' room reusable;
- nothing lost: as many handler rows as commands sent, the queue empty, no command
  failed or set aside.

    make soak                                       # 30 minutes, retention 5 minutes
    make soak SOAK_ARGS='--minutes 3 --retention 60'

Writes bench/results/soak.json; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import env

TABLES = {
    "command": "cbus.command",
    "audit": "cbus.audit",
    "queue": f"pgmq.q_{env.QUEUE}",
    "archive": f"pgmq.a_{env.QUEUE}",
}
VACUUM_LAG = 60  # s: autovacuum_naptime, PostgreSQL's default
SEQ_BLOCK = 1_000_000_000  # sender k sends seq k * SEQ_BLOCK + i
SETUP = "CREATE TABLE IF NOT EXISTS soak_effect (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"  # noqa: E501

# -- pruning -----------------------------------------------------------------------------


def cbus_prunes() -> bool:
    """Whether this cbus prunes by itself: it has `cbus db prune` (contract section 9).

    A cbus that has the command also has the worker's background pruner, which
    prunes what the schema's `retention` option says: the soak then only watches.
    """
    cli = Path(sys.executable).with_name("cbus")
    proc = subprocess.run([str(cli), "db", "prune", "--help"], capture_output=True, text=True)
    return proc.returncode == 0


def schema_with_retention(out: Path, seconds: int) -> Path:
    """The benchmark's schema with every retention key set to `seconds`."""
    text = env.SCHEMA.read_text()
    keys = ", ".join(f"{k}: {seconds}s" for k in ("completed", "failed", "canceled", "audit"))
    text = text.replace("options:\n", f"options:\n  retention: {{{keys}, archive: {seconds}s}}\n")
    out.write_text(text)
    return out


# Until cbus prunes by itself (the retention work, contract section 9), the soak
# deletes what retention would, in batches, from its own process: finished commands,
# audit rows and archived messages older than the retention. Swap `prune_once` for
# nothing once `cbus_prunes()` is true (main does).
PRUNE = (
    "DELETE FROM cbus.command WHERE ctid = ANY (ARRAY(SELECT ctid FROM cbus.command"
    " WHERE status IN ('COMPLETED', 'FAILED', 'CANCELED')"
    " AND finished_at < clock_timestamp() - make_interval(secs => %(keep)s) LIMIT 5000))",
    "DELETE FROM cbus.audit WHERE ctid = ANY (ARRAY(SELECT ctid FROM cbus.audit"
    " WHERE at < clock_timestamp() - make_interval(secs => %(keep)s) LIMIT 5000))",
    f"DELETE FROM pgmq.a_{env.QUEUE} WHERE ctid = ANY (ARRAY(SELECT ctid FROM"
    f" pgmq.a_{env.QUEUE} WHERE archived_at < clock_timestamp()"
    " - make_interval(secs => %(keep)s) LIMIT 5000))",
)


def prune_once(conn: psycopg.Connection[Any], keep: int) -> int:
    """One pass of the soak's own pruning: batches of 5,000 until nothing is due."""
    removed = 0
    for statement in PRUNE:
        while True:
            count = conn.execute(statement, {"keep": keep}).rowcount
            removed += count
            if count < 5000:
                break
    return removed


def pruner(dsn: str, keep: int, stop: threading.Event, every: float = 10.0) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(every):
            prune_once(conn, keep)


# -- the processes ---------------------------------------------------------------------------


def sender(args: argparse.Namespace) -> None:
    """Send at `rate` per second until `until` (epoch seconds), one per transaction."""
    bench = env.import_bench(args.gen_dir)
    sent = 0
    base = args.index * SEQ_BLOCK
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        start = args.start  # every sender starts at once, once all are up
        time.sleep(max(0.0, start - time.time()))
        while True:
            now = time.time()
            if now >= args.until:
                break
            due = int((now - start) * args.rate) + 1
            while sent < due:
                bench.send_ping(conn, **env.ping_kwargs(base + sent))
                sent += 1
            time.sleep(max(0.0, start + sent / args.rate - time.time()))
    sys.stdout.write(json.dumps({"sent": sent}) + "\n")


def worker(args: argparse.Namespace) -> None:
    """`cbus.Worker(...).run()` until SIGTERM; its handler writes one row per command."""
    import cbus

    bench = env.import_bench(args.gen_dir)

    class Effect(bench.BenchHandlers):  # type: ignore[misc,name-defined]
        def ping(self, cmd: Any, ctx: Any) -> None:
            ctx.conn.execute("INSERT INTO soak_effect (seq) VALUES (%s)", (cmd.seq,))

    w = cbus.Worker(args.dsn, [Effect()], concurrency=args.concurrency)
    w.run()
    sys.stdout.write(json.dumps({"completed": w.completed, "failed": w.failed}) + "\n")


# -- watching ------------------------------------------------------------------------------


def sample(conn: psycopg.Connection[Any], since: float, t: float) -> dict[str, Any]:
    """What the minute that ends now did, and the tables' sizes now."""
    window = {"since": since, "until": t}
    row = conn.execute(
        "SELECT count(*) FROM soak_effect WHERE at >= to_timestamp(%(since)s)"
        " AND at < to_timestamp(%(until)s)",
        window,
    ).fetchone()
    done = int(row[0]) if row else 0
    lat = conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM finished_at - created_at))"
        " FROM cbus.command WHERE status = 'COMPLETED'"
        " AND finished_at >= to_timestamp(%(since)s) AND finished_at < to_timestamp(%(until)s)",
        window,
    ).fetchone()
    p50, p99 = (lat[0] if lat and lat[0] else [float("nan")] * 2)[:2]
    sizes: dict[str, int] = {}
    for name, table in TABLES.items():
        size = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()
        sizes[name] = int(size[0]) if size else 0
    depth = env.queue_depth(conn, env.QUEUE)
    conn.commit()
    return {
        "throughput": done / (t - since),
        "p50_ms": p50 * 1000,
        "p99_ms": p99 * 1000,
        "depth": depth,
        "bytes": sizes,
    }


def tenths(conn: psycopg.Connection[Any], start: float, end: float) -> list[float]:
    """Handler rows committed per second in each tenth of [start, end)."""
    step = (end - start) / 10
    rows = conn.execute(
        "SELECT floor((extract(epoch FROM at) - %(start)s) / %(step)s)::int AS i, count(*)"
        " FROM soak_effect WHERE at >= to_timestamp(%(start)s) AND at < to_timestamp(%(end)s)"
        " GROUP BY 1",
        {"start": start, "end": end, "step": step},
    ).fetchall()
    counts = dict.fromkeys(range(10), 0)
    for i, count in rows:
        counts[min(9, int(i))] += int(count)
    return [counts[i] / step for i in range(10)]


def checks(
    minutes: list[dict[str, Any]],
    by_tenth: list[float],
    retention: int,
    sent: int,
    final: dict[str, int],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    first, last = by_tenth[0], by_tenth[-1]
    drift = last / first - 1 if first else float("nan")
    out.append(
        {
            "check": "throughput, last tenth within 10% of the first",
            "first_per_s": first,
            "last_per_s": last,
            "change": drift,
            "pass": bool(abs(drift) <= 0.10),
        }
    )
    # Freed rows take room again only once autovacuum has come round (its naptime
    # is a minute): the first retention period ends that much later.
    after = [m for m in minutes if m["t"] >= retention + VACUUM_LAG]
    if len(after) >= 2:
        ref = after[0]["bytes"]
        for name in TABLES:
            peak = max(m["bytes"][name] for m in after[1:])
            limit = ref[name] * 1.5 + 1024 * 1024
            out.append(
                {
                    "check": f"{name} size flat after the first retention period",
                    "bytes_then": ref[name],
                    "bytes_peak_after": peak,
                    "pass": bool(peak <= limit),
                }
            )
    else:
        out.append(
            {
                "check": "table sizes flat after the first retention period",
                "pass": False,
                "why": "the soak ended less than two samples after its first retention period",
            }
        )
    out.append(
        {
            "check": "nothing lost: every command sent completed once",
            "sent": sent,
            **final,
            "pass": bool(
                final["handled"] == sent
                and final["left"] == 0
                and final["unfinished"] == 0
                and final["failed"] == 0
            ),
        }
    )
    return out


def run(args: argparse.Namespace, dsn: str, tmp: Path) -> int:
    own_pruner = not cbus_prunes()
    schema = env.SCHEMA if own_pruner else schema_with_retention(tmp / "bench.yaml", args.retention)
    gen_dir = generate(schema, tmp / "gen")
    bench = env.import_bench(gen_dir)
    env.install(dsn, bench)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP)
    pruned_by = "the soak's own process (cbus has no pruner yet)" if own_pruner else "cbus"
    seconds = args.minutes * 60
    print(
        f"soak: {args.minutes:g} min, {args.senders} senders at {args.rate:g}/s in all, "
        f"{args.workers} workers at concurrency {args.concurrency}, retention "
        f"{args.retention} s, pruned by {pruned_by}",
        flush=True,
    )
    me = [sys.executable, str(Path(__file__).resolve()), "--dsn", dsn, "--gen-dir", str(gen_dir)]
    workers = [
        subprocess.Popen(
            [*me, "--concurrency", str(args.concurrency), "worker"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.workers)
    ]
    # Workers connect and check the database, senders import cbus: all are up when
    # the senders start, together, so the first tenth is not their start-up.
    start = time.time() + 5
    until = start + seconds
    per_sender = args.rate / args.senders
    timing = ["--rate", str(per_sender), "--start", str(start), "--until", str(until)]
    senders = [
        subprocess.Popen(
            [*me, *timing, "--index", str(k), "sender"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(args.senders)
    ]
    stop = threading.Event()
    prune_thread = None
    if own_pruner:
        prune_thread = threading.Thread(target=pruner, args=(dsn, args.retention, stop))
        prune_thread.start()
    minutes: list[dict[str, Any]] = []
    print(
        f"{'min':>4} {'done/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'depth':>7}"
        + "".join(f" {name + ' MB':>11}" for name in TABLES),
        flush=True,
    )
    try:
        with psycopg.connect(dsn) as conn:
            time.sleep(max(0.0, start - time.time()))
            since = start
            while since < until - 1:
                t = min(until, since + args.every)
                time.sleep(max(0.0, t - time.time()))
                m = {"t": round(t - start, 1), **sample(conn, since, t)}
                minutes.append(m)
                since = t
                print(
                    f"{m['t'] / 60:4.1f} {m['throughput']:8.0f} {m['p50_ms']:8.1f} "
                    f"{m['p99_ms']:8.1f} {m['depth']:7d}"
                    + "".join(f" {m['bytes'][n] / 2**20:11.1f}" for n in TABLES),
                    flush=True,
                )
            sent = 0
            for p in senders:
                out, _ = p.communicate(timeout=120)
                sent += json.loads(out.strip().splitlines()[-1])["sent"]
            deadline = time.time() + 120
            while env.queue_depth(conn, env.QUEUE) and time.time() < deadline:
                time.sleep(0.5)
            conn.commit()
            by_tenth = tenths(conn, start, until)
            row = conn.execute(
                "SELECT (SELECT count(*) FROM soak_effect),"
                " (SELECT count(*) FROM cbus.command WHERE status <> 'COMPLETED')"
            ).fetchone()
            assert row is not None
            final = {
                "handled": int(row[0]),
                "unfinished": int(row[1]),
                "left": env.queue_depth(conn, env.QUEUE),
            }
    finally:
        stop.set()
        if prune_thread is not None:
            prune_thread.join()
        failed = 0
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            try:
                out, _ = p.communicate(timeout=60)
                failed += json.loads(out.strip().splitlines()[-1])["failed"]
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                p.kill()
                failed += 1  # a worker that did not stop cleanly counts against the run
    final["failed"] = failed
    results = checks(minutes, by_tenth, args.retention, sent, final)
    print()
    for c in results:
        print(f"{'pass' if c['pass'] else 'MISS'}  {c['check']}", flush=True)
        detail = {k: v for k, v in c.items() if k not in ("check", "pass")}
        print(f"      {detail}")
    given = " ".join(sys.argv[1:])
    payload = {
        "command": "make soak" + (f" SOAK_ARGS='{given}'" if given else ""),
        "minutes": args.minutes,
        "retention_s": args.retention,
        "rate": args.rate,
        "senders": args.senders,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "pruned_by": pruned_by,
        "machine": {**env.machine(), "load_average_end": os.getloadavg()},
        "per_minute": minutes,
        "throughput_by_tenth": by_tenth,
        "checks": results,
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    print(f"wrote {out_path}")
    return 0 if all(c["pass"] for c in results) else 1


def generate(schema: Path, out: Path) -> Path:
    cbgen = Path(sys.executable).with_name("cbgen")
    argv = [str(cbgen), "generate", str(schema), "--out", str(out), "--package", env.PACKAGE]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cbgen failed on {schema}:\n{proc.stdout}{proc.stderr}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--retention", type=int, default=300, help="seconds (default 300)")
    parser.add_argument("--rate", type=float, default=300.0, help="commands/s, all senders")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--out", default=str(env.BENCH / "results" / "soak.json"))
    parser.add_argument("--dsn", help="an existing database (default: an embedded server)")
    # The processes the soak starts:
    parser.add_argument("--gen-dir", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("role", nargs="?", choices=["sender", "worker"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sender":
        sender(args)
        return 0
    if args.role == "worker":
        worker(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="cbus-soak-") as tmp:
        if args.dsn:
            return run(args, args.dsn, Path(tmp))
        from cbus.devdb import DevServer

        with DevServer() as server:
            return run(args, server.dsn, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
