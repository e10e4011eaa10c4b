"""The cost of rate limits on a domain that has none: the runtime before them vs now.

`before` runs the worker of the commit this branch started from (its `runtime/`
extracted with `git archive` into a temporary folder, put first on PYTHONPATH);
`after` runs this tree's. Each mode runs in a process of its own, on the same
throwaway server and the same unlimited `bench` domain: the parent fills the queue
with N commands, the child drains them (concurrency 4, a no-op handler) and reports
its rate, and the transactions the server committed per command during the drain
(an extra statement per lease would show there). Rounds alternate the modes; the
ratio is the median of per-round ratios (after / before), as this machine's speed
wanders, and the two take turns at going first. A third row drains a domain limited
far above what it reaches (one bucket, 1,000,000/s; N/10 commands): what the limited
path itself costs.

    .venv/bin/python bench/rate.py [--n 3000] [--rounds 3] [--before REV]
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

ROOT = Path(__file__).resolve().parent.parent
LIMITED = """cbus: 1
domain: limited
commands:
  Ping:
    fields: {seq: int}
    options: {rate_limit: "1000000/s"}
"""


def child(args: argparse.Namespace) -> dict[str, Any]:
    import cbus
    from env import import_bench

    bench = import_bench(args.gen_dir)
    if args.domain == "limited":
        sys.path.insert(0, args.limited_dir)
        import cbus_limited.limited as limited  # type: ignore[import-not-found]

        class Handler(limited.LimitedHandlers):  # type: ignore[misc,name-defined]
            def ping(self, cmd: Any, ctx: Any) -> None:
                pass

    else:

        class Handler(bench.BenchHandlers):  # type: ignore[misc,name-defined,no-redef]
            def ping(self, cmd: Any, ctx: Any) -> None:
                pass

    worker = cbus.Worker(args.dsn, [Handler()], concurrency=4, poll_interval=0.05)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        before = _commits(conn)
        start = time.perf_counter()
        worker.run(until_idle=True)
        drain = time.perf_counter() - start
        commits = _commits(conn) - before
    return {
        "drain": worker.completed / drain,
        "completed": worker.completed,
        "commits_per_command": commits / max(worker.completed, 1),
        "cbus_from": str(Path(cbus.__file__).parent),
    }


def _commits(conn: psycopg.Connection[Any]) -> int:
    """Transactions committed in this database: backends flush their counts within 1 s."""
    time.sleep(1.1)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


def run_child(
    mode: str, domain: str, dsn: str, gen_dir: Path, limited_dir: Path, before_dir: Path
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "child", "--dsn", dsn, "--gen-dir", str(gen_dir)]
    argv += ["--domain", domain, "--limited-dir", str(limited_dir)]
    env = dict(os.environ)
    if mode == "before":
        env["PYTHONPATH"] = os.pathsep.join([str(before_dir / "runtime"), str(ROOT / "bench")])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900, env=env)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def fill(dsn: str, bench: Any, limited: Any, domain: str, n: int) -> None:
    import env

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE cbus.command, cbus.audit, cbus.rate_bucket")
        with conn.transaction():
            for i in range(n):
                if domain == "limited":
                    limited.send_ping(conn, seq=i)
                else:
                    bench.send_ping(conn, **env.ping_kwargs(i))
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("--dsn")
    parser.add_argument("--gen-dir")
    parser.add_argument("--limited-dir")
    parser.add_argument("--domain", default="bench")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default="main", help="the revision measured as before")
    args = parser.parse_args()
    if args.what == "child":
        print(json.dumps(child(args)))
        return

    import cbus
    import env
    from cbus.devdb import DevServer

    base = subprocess.run(
        ["git", "merge-base", "HEAD", args.before],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rows: dict[str, list[dict[str, Any]]] = {"before": [], "after": [], "after, limited": []}
    with tempfile.TemporaryDirectory(prefix="cbus-bench-rate-") as tmp, DevServer() as server:
        before_dir = Path(tmp) / "before"
        before_dir.mkdir()
        archive = subprocess.run(
            ["git", "archive", base, "runtime"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(before_dir)], input=archive, check=True)
        gen_dir = env.generate(Path(tmp) / "gen")
        limited_dir = Path(tmp) / "limited"
        (Path(tmp) / "schemas").mkdir()
        (Path(tmp) / "schemas" / "limited.yaml").write_text(LIMITED)
        cbgen = Path(sys.executable).with_name("cbgen")
        subprocess.run(
            [
                str(cbgen),
                "generate",
                str(Path(tmp) / "schemas"),
                "--out",
                str(limited_dir),
                "--package",
                "cbus_limited",
            ],
            check=True,
            capture_output=True,
        )
        bench = env.import_bench(gen_dir)
        sys.path.insert(0, str(limited_dir))
        import cbus_limited.limited as limited

        env.install(server.dsn, bench)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            limited.install(conn)
        for round_ in range(args.rounds):
            cases = [("before", "before", "bench"), ("after", "after", "bench")]
            if round_ % 2:
                cases.reverse()  # neither mode always runs first
            for label, mode, domain in [*cases, ("after, limited", "after", "limited")]:
                n = args.n if domain == "bench" else max(args.n // 10, 100)
                fill(server.dsn, bench, limited, domain, n)
                seen = run_child(mode, domain, server.dsn, gen_dir, limited_dir, before_dir)
                assert seen["completed"] == n, seen
                rows[label].append(seen)
        assert rows["before"][0]["cbus_from"].startswith(str(before_dir)), rows["before"][0]
        assert not rows["after"][0]["cbus_from"].startswith(tmp), rows["after"][0]
    ratios = [a["drain"] / b["drain"] for a, b in zip(rows["after"], rows["before"], strict=True)]
    ratio = statistics.median(ratios)
    limited_ratio = statistics.median(
        a["drain"] / b["drain"] for a, b in zip(rows["after, limited"], rows["before"], strict=True)
    )
    print(f"{'case (drain, c=4, no-op handler)':<44} {'cmd/s':>8} {'commits/cmd':>12} {'ratio':>6}")
    table = []
    for label, r in (("before", 1.0), ("after", ratio), ("after, limited", limited_ratio)):
        rate = statistics.median(x["drain"] for x in rows[label])
        commits = statistics.median(x["commits_per_command"] for x in rows[label])
        name = {
            "before": f"unlimited domain, before ({base[:8]})",
            "after": "unlimited domain, after (this tree)",
            "after, limited": "limited domain (1,000,000/s), after",
        }[label]
        print(f"{name:<44} {rate:8.0f} {commits:12.3f} {r:6.2f}")
        table.append(
            {
                "case": name,
                "drain": rate,
                "commits_per_command": commits,
                "ratio": r,
                "drains": [x["drain"] for x in rows[label]],
            }
        )
    print("after / before, per round: " + ", ".join(f"{x:.2f}" for x in ratios))
    out = ROOT / "bench" / "results" / "rate.json"
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["bench/rate.py", *sys.argv[1:]]),
                "n": args.n,
                "rounds": args.rounds,
                "before": base,
                "cbus": cbus.__version__,
                "machine": env.machine(),
                "rows": table,
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
