"""The cost of tracing's hooks: OpenTelemetry installed without a provider, vs not installed.

Each mode runs in a process of its own: `hidden` hides the `opentelemetry` package
(an import hook that refuses it, as if not installed), `installed` has the API but
no tracer provider or exporter (non-recording spans). A child sends N commands on
an autocommit connection, then a worker drains them; rounds alternate the modes and
the rows are medians of per-round ratios (installed / hidden), since this machine's
speed wanders. Run it with the project's venv, which has opentelemetry-api:

    .venv/bin/python bench/otel.py [--n 2000] [--rounds 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

HIDE = """
import sys

class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, _Hide())
"""


def child(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "hidden":
        exec(HIDE)
    import cbus
    import psycopg
    from cbus import tracing
    from env import import_bench, ping_kwargs

    bench = import_bench(args.gen_dir)
    kwargs = [ping_kwargs(i) for i in range(args.n)]
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for k in kwargs:
            bench.send_ping(conn, **k)
        send = time.perf_counter() - start

    class Handler(bench.BenchHandlers):  # type: ignore[misc,name-defined]
        def ping(self, cmd: Any, ctx: Any) -> None:
            pass

    worker = cbus.Worker(args.dsn, [Handler()], concurrency=4, poll_interval=0.05)
    start = time.perf_counter()
    worker.run(until_idle=True)
    drain = time.perf_counter() - start
    return {
        "send": args.n / send,
        "drain": worker.completed / drain,
        "tracing": tracing.enabled(),
        "otel_modules": sum("opentelemetry" in m for m in sys.modules),
    }


def run_child(mode: str, dsn: str, gen_dir: Path, n: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "child", "--mode", mode, "--dsn", dsn]
    argv += ["--gen-dir", str(gen_dir), "--n", str(n)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("--mode", choices=["hidden", "installed"])
    parser.add_argument("--dsn")
    parser.add_argument("--gen-dir")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.what == "child":
        print(json.dumps(child(args)))
        return

    import env
    from cbus.devdb import DevServer

    ratios: dict[str, list[float]] = {"send": [], "drain": []}
    seen: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cbus-bench-otel-") as tmp, DevServer() as server:
        gen_dir = env.generate(Path(tmp) / "gen")
        env.install(server.dsn, env.import_bench(gen_dir))
        for _ in range(args.rounds):
            for mode in ("hidden", "installed"):
                seen[mode] = run_child(mode, server.dsn, gen_dir, args.n)
            assert not seen["hidden"]["tracing"] and seen["hidden"]["otel_modules"] == 0
            assert seen["installed"]["tracing"], "run with a venv that has opentelemetry-api"
            for what in ratios:
                ratios[what].append(seen["installed"][what] / seen["hidden"][what])
    print(f"{'case':<70} {'ratio':>6}")
    for what, name in (("send", "cbus send, autocommit"), ("drain", "cbus drain, c=4, no-op")):
        label = f"{name}: otel installed, no provider / not installed"
        print(f"{label:<70} {statistics.median(ratios[what]):6.2f}")
    last = seen["hidden"]
    print(f"(last round, not installed: {last['send']:.0f} sends/s, {last['drain']:.0f} drained/s)")


if __name__ == "__main__":
    main()
