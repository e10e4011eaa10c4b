"""Run one worker in a process of its own and print what it measured as one JSON line.

`run.py` fills the queue, then starts this script, so a worker's timing and its
resident memory are its own: no benchmark harness, no peer library in the process.

    python bench/drain.py cbus --dsn DSN --gen-dir DIR --n 20000 --concurrency 8 \
        [--async] [--handler noop|write]
    python bench/drain.py user --dsn DSN --gen-dir DIR --n 20000 --concurrency 4
    python bench/drain.py rcmd-fill|rcmd --dsn DSN --n 2000 [--concurrency 8]
    python bench/drain.py pgq-fill|pgq --dsn DSN --n 10000 [--batch-size 10] [--driver D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


def memory() -> dict[str, int]:
    """Resident memory of this process now (VmRSS) and at its peak (VmHWM), in bytes."""
    found: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    except OSError:
        import psutil

        info = psutil.Process().memory_info()
        found = {"VmRSS": info.rss, "VmHWM": info.rss}
    return {"rss": found["VmRSS"], "hwm": found["VmHWM"]}


def drain_cbus(args: argparse.Namespace) -> dict[str, Any]:
    import cbus
    from env import import_bench

    bench = import_bench(args.gen_dir)
    write = args.handler == "write"
    first: list[float] = []  # when a handler first ran: the worker's start-up ends
    insert = "INSERT INTO bench_effect (command_id, seq) VALUES (%s, %s)"

    if args.use_async:

        class AsyncHandler(bench.BenchAsyncHandlers):  # type: ignore[misc,name-defined]
            async def ping(self, cmd: Any, ctx: Any) -> None:
                if not first:
                    first.append(time.perf_counter())
                if write:
                    await ctx.conn.execute(insert, (ctx.command_id, cmd.seq))

        handler: Any = AsyncHandler()
    else:

        class SyncHandler(bench.BenchHandlers):  # type: ignore[misc,name-defined]
            def ping(self, cmd: Any, ctx: Any) -> None:
                if not first:
                    first.append(time.perf_counter())
                if write:
                    ctx.conn.execute(insert, (ctx.command_id, cmd.seq))

        handler = SyncHandler()

    before = memory()
    worker = cbus.Worker(args.dsn, [handler], concurrency=args.concurrency)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    start = time.perf_counter()
    thread.start()
    deadline = start + 600
    while worker.completed + worker.failed < args.n and thread.is_alive():
        if time.perf_counter() > deadline:
            break
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    # Idle now, connections still open: the worker's resident memory after draining.
    time.sleep(0.2)
    after = memory()
    worker.stop()
    thread.join(30)
    return {
        "elapsed": elapsed,
        # From the worker's start to its first handler call (connections, checks,
        # LISTEN, the first lease): inside `elapsed`, outside the floor's timing.
        "lead_s": (first[0] - start) if first else elapsed,
        "completed": worker.completed,
        "failed": worker.failed,
        "rss_before": before["rss"],
        "rss": after["rss"],
        "hwm": after["hwm"],
    }


def drain_user(args: argparse.Namespace) -> dict[str, Any]:
    """A user's drain: send n commands here, then `Worker(...).run(until_idle=True)` here.

    As a user measures one from outside (issue 15): in the process that sent the
    commands, a handler that only counts its calls, timed from the first call to
    the last. `run_s` is the whole `run`, start-up checks and exit detection included.
    """
    import cbus
    import sends
    from env import import_bench

    bench = import_bench(args.gen_dir)
    sends.fill(args.dsn, bench, args.n)

    class Counting(bench.BenchHandlers):  # type: ignore[misc,name-defined]
        calls = 0
        first = 0.0
        last = 0.0

        def ping(self, cmd: Any, ctx: Any) -> None:
            now = time.perf_counter()
            if not self.calls:
                self.first = now
            self.last = now
            self.calls += 1

    handler = Counting()
    worker = cbus.Worker(args.dsn, [handler], concurrency=args.concurrency)
    start = time.perf_counter()
    worker.run(until_idle=True)
    ended = time.perf_counter()
    return {
        "elapsed": handler.last - handler.first,
        "run_s": ended - start,
        "lead_s": handler.first - start,
        "tail_s": ended - handler.last,
        "completed": worker.completed,
        "failed": worker.failed,
        "calls": handler.calls,
        **memory(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["cbus", "user", "rcmd-fill", "rcmd", "pgq-fill", "pgq"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--gen-dir")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--async", dest="use_async", action="store_true")
    parser.add_argument("--handler", choices=["noop", "write"], default="noop")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--singles", type=int, default=0)
    parser.add_argument("--driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    args = parser.parse_args()

    import peers

    if args.kind == "cbus":
        out = drain_cbus(args)
    elif args.kind == "user":
        out = drain_user(args)
    elif args.kind == "rcmd-fill":
        asyncio.run(peers.rcmd_install(args.dsn))
        asyncio.run(peers.rcmd_reset(args.dsn))
        out = asyncio.run(peers.rcmd_fill(args.dsn, args.n, args.singles))
    elif args.kind == "rcmd":
        out = asyncio.run(peers.rcmd_drain(args.dsn, args.n, args.concurrency))
    elif args.kind == "pgq-fill":
        asyncio.run(peers.pgq_install(args.dsn))
        asyncio.run(peers.pgq_reset(args.dsn))
        out = asyncio.run(peers.pgq_fill(args.dsn, args.n, args.singles))
    else:
        out = asyncio.run(peers.pgq_drain(args.dsn, args.n, args.batch_size, args.driver))
    if args.kind not in ("cbus", "user"):
        out.update(memory())
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
