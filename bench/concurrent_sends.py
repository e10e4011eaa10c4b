"""Sends from many threads at once: cbus beside raw `pgmq.send`, and each wake-up design.

Every thread has its own connection and sends one message per transaction; the
threads start together (a barrier) and the rate is all their sends over the time
from the barrier to the last thread's end. Each round runs every variant at every
thread count, in a rotated order, so a slow second on a shared machine lands on
all of them; rows are medians over rounds, ratios medians of per-round ratios.

The variants (docs/adr/0010-wake-ups-without-notify-per-commit.md):

- `raw pgmq.send`, and `raw pgmq.send + pg_notify` (what any NOTIFY per commit costs);
- `cbus send_x`: the generated sender as shipped (a NOTIFY only when this process
  has not notified the domain within the last few ms, `cbus._wake`);
- `cbus, NOTIFY every send`: cbus's statement with its NOTIFY always (before);
- `cbus, no NOTIFY`: the statement without one (the worker's poll finds it: the
  ceiling for any design);
- `cbus, NOTIFY if a worker sleeps`: a shared advisory lock probe that a sleeping
  worker would hold exclusively (here nobody sleeps: the probe's cost alone).

Two rows split cbus's cost in two (ADR 0010, "Where the time goes"):

- `cbus statement, parameters built beforehand`: `send_x`'s statement, each send's
  parameters made by `send_params` before the clock starts: the SQL alone;
- `raw pgmq.send + cbus's Python`: raw `pgmq.send`, each send also running what
  `send_x` runs in Python before its statement (building and checking the command,
  its ids and headers), the result discarded: the Python alone.

    .venv/bin/python bench/concurrent_sends.py [--n 15000] [--rounds 3] [--threads 1,8,32]
        [--procs 4]   # each row's threads spread over 4 processes: no shared GIL

Prints a table and writes bench/results/concurrent_sends.json; `bench/run.py`
runs it as its `concurrency` section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import env
from env import RAW_QUEUE, ping_kwargs, raw_message

RAW = "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb)"
RAW_NOTIFY = "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb), pg_notify('raw_floor', '')"
NOTIFY = "pg_notify('cbus_bench', '')"
# Option (b): a worker about to sleep would take this key exclusively (session-level);
# a send that gets it shared knows nobody sleeps and holds it to its commit.
PROBE = (
    "CASE WHEN pg_try_advisory_xact_lock_shared(hashtext('cbus_bench')) THEN NULL "
    "ELSE pg_notify('cbus_bench', '') END"
)
ROW_BASE = "raw pgmq.send"
VARIANTS = (
    "raw pgmq.send",
    "raw pgmq.send + pg_notify",
    "cbus send_x",
    "cbus, NOTIFY every send (before)",
    "cbus, no NOTIFY",
    "cbus, NOTIFY if a worker sleeps (probe)",
    "raw pgmq.send, BEGIN/send/COMMIT",
    "cbus send_x, BEGIN/send/COMMIT",
    "cbus statement, parameters built beforehand",
    "raw pgmq.send + cbus's Python",
)
BASE_OF = {
    "cbus send_x, BEGIN/send/COMMIT": "raw pgmq.send, BEGIN/send/COMMIT",
}


def _sample(bench: Any, notify: bool) -> bytes:
    """The statement `send_x` runs for a command due at once, with or without NOTIFY."""
    from cbus._send_base import send_params, send_statement

    spec, params = send_params(
        bench.Ping(**ping_kwargs(0)),
        command_id=None,
        correlation_id=None,
        reply_to=None,
        delay=None,
    )
    return send_statement(spec, params, own_id=False, notify=notify)


def _statement(name: str, bench: Any) -> bytes:
    text = _sample(bench, notify=True)
    assert NOTIFY.encode() in text, "the send statement lost its NOTIFY"
    if name == "cbus, no NOTIFY":
        return text.replace(b", " + NOTIFY.encode(), b"")
    if name == "cbus, NOTIFY if a worker sleeps (probe)":
        return text.replace(NOTIFY.encode(), PROBE.encode())
    return text


def make_op(name: str, bench: Any, conn: psycopg.Connection[Any], n: int) -> Callable[[int], None]:
    """One send of message i on `conn`, in its own transaction."""
    commit = not conn.autocommit
    if name == "raw pgmq.send + cbus's Python":
        return _raw_and_python(bench, conn, n)
    if name == "cbus statement, parameters built beforehand":
        return _prebuilt(bench, conn, n)
    if name.startswith("raw"):
        messages = [raw_message(i) for i in range(n)]
        text = RAW_NOTIFY if "pg_notify" in name else RAW

        def raw(i: int) -> None:
            conn.execute(text, (RAW_QUEUE, *messages[i])).fetchone()
            if commit:
                conn.commit()

        return raw
    kwargs = [ping_kwargs(i) for i in range(n)]
    if name.startswith("cbus send_x"):

        def send(i: int) -> None:
            bench.send_ping(conn, **kwargs[i])
            if commit:
                conn.commit()

        return send
    from cbus._send_base import send_params

    statement = _statement(name, bench)

    def variant(i: int) -> None:
        _, params = send_params(
            bench.Ping(**kwargs[i]), command_id=None, correlation_id=None, reply_to=None, delay=None
        )
        conn.execute(statement, params).fetchone()

    return variant


def _prebuilt(bench: Any, conn: psycopg.Connection[Any], n: int) -> Callable[[int], None]:
    from cbus._send_base import send_params

    statement = _sample(bench, notify=False)
    built = [
        send_params(
            bench.Ping(**ping_kwargs(i)),
            command_id=None,
            correlation_id=None,
            reply_to=None,
            delay=None,
        )[1]
        for i in range(n + 6)  # and the warm-up's sends: every command_id new
    ]
    params = iter(built)

    def op(i: int) -> None:
        conn.execute(statement, next(params)).fetchone()

    return op


def _raw_and_python(bench: Any, conn: psycopg.Connection[Any], n: int) -> Callable[[int], None]:
    from cbus import _wake, targets
    from cbus._send_base import SendResult, send_params, send_statement

    messages = [raw_message(i) for i in range(n)]
    kwargs = [ping_kwargs(i) for i in range(n)]

    def op(i: int) -> None:
        # What bus.send does around its statement, in the same order.
        targets.check(conn)
        spec, params = send_params(
            bench.Ping(**kwargs[i]), command_id=None, correlation_id=None, reply_to=None, delay=None
        )
        _wake.due(conn, "cbus_bench_python_only")
        send_statement(spec, params, own_id=False, notify=False)
        row = conn.execute(RAW, (RAW_QUEUE, *messages[i])).fetchone()
        assert row is not None
        SendResult(params["command_id"], params["correlation_id"], row[0], spec.kind)

    return op


def run_threads(dsn: str, bench: Any, name: str, threads: int, n: int) -> float:
    """n sends in all from `threads` threads, each on its own connection; sends/s."""
    per = max(1, n // threads)
    autocommit = "BEGIN" not in name
    conns = [psycopg.connect(dsn, autocommit=autocommit) for _ in range(threads)]
    ops = [make_op(name, bench, c, per) for c in conns]
    for op in ops:  # warm: psycopg prepares a statement on its 5th execution
        for i in range(6):
            op(i)
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(op: Callable[[int], None]) -> None:
        barrier.wait()
        try:
            for i in range(per):
                op(i)
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(op,)) for op in ops]
    for t in workers:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - began
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    return per * threads / elapsed


def run_procs(dsn: str, bench: Any, name: str, threads: int, n: int, procs: int) -> float:
    """As `run_threads`, the threads spread over `procs` forked processes (no shared GIL)."""
    import multiprocessing

    procs = max(1, min(procs, threads))
    per_proc = threads // procs
    per = max(1, n // (per_proc * procs))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(per_proc * procs + 1)

    def child() -> None:
        conns = [psycopg.connect(dsn, autocommit="BEGIN" not in name) for _ in range(per_proc)]
        ops = [make_op(name, bench, c, per) for c in conns]
        for op in ops:
            for i in range(6):
                op(i)

        def work(op: Callable[[int], None]) -> None:
            barrier.wait()
            for i in range(per):
                op(i)

        workers = [threading.Thread(target=work, args=(op,)) for op in ops]
        for t in workers:
            t.start()
        for t in workers:
            t.join()

    children = [ctx.Process(target=child) for _ in range(procs)]
    for c in children:
        c.start()
    barrier.wait(timeout=120)
    began = time.perf_counter()
    for c in children:
        c.join()
    elapsed = time.perf_counter() - began
    if any(c.exitcode != 0 for c in children):
        raise RuntimeError(f"{name}: a sending process failed")
    return per * per_proc * procs / elapsed


def measure(
    dsn: str,
    bench: Any,
    *,
    n: int,
    rounds: int,
    threads: tuple[int, ...],
    variants: tuple[str, ...] = VARIANTS,
    report: Callable[[str], Any] = print,
    procs: int = 1,
) -> dict[str, dict[int, list[float]]]:
    """{variant: {threads: [rate per round]}}, every variant interleaved per round."""
    runs: dict[str, dict[int, list[float]]] = {v: {t: [] for t in threads} for v in variants}
    for r in range(rounds):
        for k, t in enumerate(threads):
            order = list(variants[(r + k) % len(variants) :] + variants[: (r + k) % len(variants)])
            for name in order:
                env.reset(dsn)
                if procs > 1:
                    value = run_procs(dsn, bench, name, t, n, procs)
                else:
                    value = run_threads(dsn, bench, name, t, n)
                runs[name][t].append(value)
                report(f"    round {r + 1} {t:>2} threads  {name:<42} {value:>9,.0f}/s")
    return runs


def ratio(runs: dict[str, dict[int, list[float]]], name: str, threads: int) -> float:
    base = runs[BASE_OF.get(name, ROW_BASE)][threads]
    return statistics.median(x / y for x, y in zip(runs[name][threads], base, strict=True))


def table(runs: dict[str, dict[int, list[float]]], threads: tuple[int, ...]) -> str:
    head = "| variant | " + " | ".join(f"{t} thr/s | ratio" for t in threads) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(threads)]
    for name, by in runs.items():
        cells = []
        for t in threads:
            cells.append(f"{statistics.median(by[t]):,.0f}")
            cells.append(f"{ratio(runs, name, t):.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        f"(ratios: each row against `{ROW_BASE}` at as many threads, in the same round;"
        " BEGIN/send/COMMIT rows against the raw one)"
    )
    return "\n".join(lines)


GOALS = {8: 0.9, 32: 0.8}  # issue 15: send_x against raw pgmq.send from as many threads
PAIRED = ("cbus send_x", "cbus send_x, BEGIN/send/COMMIT")


def paired(
    dsn: str,
    bench: Any,
    *,
    n: int,
    pairs: int,
    threads: tuple[int, ...] = tuple(GOALS),
    names: tuple[str, ...] = PAIRED,
    report: Callable[[str], Any] = print,
) -> dict[str, dict[int, list[float]]]:
    """{variant: {threads: [ratio per pair]}}: runs of raw and cbus taking turns.

    raw, cbus, raw, cbus, ..., raw: each cbus run is divided by the geometric mean of
    the raw runs just before and after it, seconds apart, so a slow stretch of a
    shared machine lands on both sides of a ratio. The table's rounds put the ten
    variants between a raw run and its cbus run, and single rounds ranged from 0.6x
    to 1.1x there (ADR 0010).
    """
    out: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    for name in names:
        base = BASE_OF.get(name, ROW_BASE)
        for t in threads:
            raws: list[float] = []
            ours: list[float] = []
            for i in range(2 * pairs + 1):
                which = base if i % 2 == 0 else name
                env.reset(dsn)
                (raws if which == base else ours).append(run_threads(dsn, bench, which, t, n))
            out[name][t] = [c / (raws[i] * raws[i + 1]) ** 0.5 for i, c in enumerate(ours)]
            report(
                f"    paired {t:>2} threads  {name:<34} "
                + " ".join(f"{x:.2f}" for x in out[name][t])
            )
    return out


def targets(
    runs: dict[str, dict[int, list[float]]],
    pairs: dict[str, dict[int, list[float]]] | None = None,
) -> list[dict[str, Any]]:
    """The goals, from the paired runs when there are any (else the table's rounds)."""
    out = []
    for name in PAIRED:
        for t, goal in GOALS.items():
            if pairs and t in pairs.get(name, {}):
                found = pairs[name][t]
                value = statistics.median(found)
                how = f"median of {len(found)} paired runs, {min(found):.2f}-{max(found):.2f}"
            elif name in runs and t in runs[name]:
                value = ratio(runs, name, t)
                how = f"median of {len(runs[name][t])} rounds"
            else:
                continue
            out.append(
                {
                    "target": f"{name}, {t} threads / raw",
                    "ratio": value,
                    "goal": goal,
                    "pass": bool(value >= goal),
                    "how": how,
                }
            )
    return out


def latency(dsn: str, bench: Any, n: int) -> dict[str, dict[str, float]]:
    """Commit -> handler start at low load (one at a time, and one every 5 ms)."""
    import sends

    out = {}
    for label, concurrency, interval in (
        ("one at a time, c=4", 4, None),
        ("one every 5 ms, c=4", 4, 0.005),
    ):
        env.reset(dsn)
        found = sends.latency(
            dsn, bench, n, concurrency=concurrency, use_async=False, interval=interval
        )
        samples = sorted(found)
        out[label] = {
            "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
            "n": len(samples),
        }
    return out


def drain_acks(dsn: str, bench: Any, n: int, rounds: int) -> dict[str, list[float]]:
    """A c=8 drain of n commands, its acknowledgements notifying the done channel each
    (`_wake.WINDOW` 0: the code before ADR 0010) or at most every 5 ms; drains/s."""
    import cbus
    import sends
    from cbus import _wake

    class Handler(bench.BenchHandlers):  # type: ignore[misc,name-defined]
        def ping(self, cmd: Any, ctx: Any) -> None:
            pass

    window = _wake.WINDOW
    out: dict[str, list[float]] = {"ack NOTIFY each batch (before)": [], "ack NOTIFY coalesced": []}
    try:
        for _ in range(rounds):
            for label in out:
                env.reset(dsn)
                sends.fill(dsn, bench, n)
                _wake.WINDOW = 0.0 if "before" in label else window
                worker = cbus.Worker(dsn, [Handler()], concurrency=8, poll_interval=0.05)
                began = time.perf_counter()
                worker.run(until_idle=True)
                out[label].append(n / (time.perf_counter() - began))
                print(f"    {label:<42} {out[label][-1]:>9,.0f}/s", flush=True)
    finally:
        _wake.WINDOW = window
    return out


def main() -> int:
    from cbus.devdb import DevServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15000, help="sends per variant and thread count")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,8,32")
    parser.add_argument("--latency", type=int, default=200, help="commands per latency row")
    parser.add_argument(
        "--procs", type=int, default=1, help="spread each row's threads over this many processes"
    )
    parser.add_argument("--drain", type=int, default=0, help="commands per ack-NOTIFY drain")
    parser.add_argument(
        "--pairs", type=int, default=6, help="raw/cbus pairs per target (0: targets from rounds)"
    )
    parser.add_argument("--out", default=str(env.BENCH / "results" / "concurrent_sends.json"))
    args = parser.parse_args()
    threads = tuple(int(t) for t in args.threads.split(","))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cbus-bench-") as tmp, DevServer() as server:
        bench = env.import_bench(env.generate(Path(tmp) / "gen"))
        env.install(server.dsn, bench)
        runs = measure(
            server.dsn, bench, n=args.n, rounds=args.rounds, threads=threads, procs=args.procs
        )
        lat = latency(server.dsn, bench, args.latency) if args.latency else {}
        pairs = paired(server.dsn, bench, n=args.n, pairs=args.pairs) if args.pairs else {}
        drains = drain_acks(server.dsn, bench, args.drain, args.rounds) if args.drain else {}
    text = table(runs, threads)
    print()
    print(text)
    found = targets(runs, pairs)
    for t in found:
        mark = "pass" if t["pass"] else "MISS"
        print(f"{t['target']:<52} {t['ratio']:.2f}x  goal >= {t['goal']}x  {mark}  ({t['how']})")
    for label, row in lat.items():
        print(f"latency {label:<24} p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms")
    for label, rates in drains.items():
        print(f"drain c=8, {label:<34} {statistics.median(rates):>9,.0f}/s")
    payload = {
        "command": "python bench/concurrent_sends.py " + " ".join(sys.argv[1:]),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": env.machine(),
        "n": args.n,
        "rounds": args.rounds,
        "procs": args.procs,
        "rates": {
            name: {str(t): [round(x, 1) for x in by[t]] for t in threads}
            for name, by in runs.items()
        },
        "ratios": {n: {str(t): round(ratio(runs, n, t), 3) for t in threads} for n in runs},
        "paired": {name: {str(t): v for t, v in by.items()} for name, by in pairs.items()},
        "targets": found,
        "latency": lat,
        "drains": drains,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
