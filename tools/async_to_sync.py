#!/usr/bin/env python3
"""Write the sync twin of each `*_async.py` runtime module, as psycopg does.

Async is the source: `bus_async.py` becomes `bus.py`, `worker_async.py` becomes
`worker.py`. The rewrite is textual on purpose (comments and type-ignore markers
survive): drop `await`, drop `async` before def/with/for, rename by one table, then
ruff-format. `--check` exits 1 when a committed sync file differs, as CI runs it.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "runtime" / "cbus"
SOURCES = {
    "bus_async.py": "bus.py",
    "worker_async.py": "_worker_sync.py",
    "outcomes_async.py": "outcomes.py",
    "waiting_async.py": "waiting.py",
}

# The one sync/async name table.
NAMES = {
    "AsyncBus": "Bus",
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncContext": "Context",
    "AsyncHandlers": "Handlers",
    "AsyncTarget": "SyncTarget",
    "AsyncWorker": "SyncWorker",
    "AsyncCursor": "Cursor",
    "AsyncServerCursor": "ServerCursor",
    "AsyncIterator": "Iterator",
    "AEvent": "Event",
    "ALock": "Lock",
    "AQueue": "Queue",
    "aspawn": "spawn",
    "asimple": "simple",
    "abounded": "bounded",
    "acancelled_by_worker": "cancelled_by_worker",
    "acancel": "cancel",
    "agather": "gather",
    "asleep": "sleep",
    "await_notifies": "wait_notifies",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "send_async": "send",
    "send_many_async": "send_many",
    "install_async": "install",
    "install_domain_async": "install_domain",
    "get_command_async": "get_command",
    "commands_ended_async": "commands_ended",
    "outcomes_async": "outcomes",
    "waiting_async": "waiting",
    "wait_for_async": "wait_for",
    "wait_batch_async": "wait_batch",
    "batch_status_async": "batch_status",
    "trace_async": "trace",
    "asynccontextmanager": "contextmanager",
    "bus_async": "bus",
    "run_async": "run_sync",
    "is_async": "is_sync",
}

HEADER = "# Generated from {src} by tools/async_to_sync.py.\n# DO NOT EDIT: change {src} instead.\n"

_WORDS = re.compile(r"\b(" + "|".join(sorted(NAMES, key=len, reverse=True)) + r")\b")


def convert(text: str, src: str) -> str:
    text = re.sub(r"\bawait\s+", "", text)
    text = re.sub(r"\basync\s+(def|with|for)\b", r"\1", text)
    text = _WORDS.sub(lambda m: NAMES[m.group(1)], text)
    text = text.replace("The async twin of", "The sync twin of")
    text = HEADER.format(src=src) + text
    # Renamed imports may no longer be in order: sort them, then format.
    for args in (["check", "--fix", "--select", "I", "--quiet", "--exit-zero"], ["format"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--stdin-filename", "x.py", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        text = proc.stdout
    return text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = 0
    for src, dst in SOURCES.items():
        if not (PKG / src).exists():
            continue
        new = convert((PKG / src).read_text(), src)
        target = PKG / dst
        old = target.read_text() if target.exists() else ""
        if old == new:
            continue
        if check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), f"a/{dst}", f"b/{dst} (from {src})"
                )
            )
        else:
            target.write_text(new)
            print(f"wrote runtime/cbus/{dst}")
    if stale:
        print(
            f"{stale} sync file(s) are stale: run `python tools/async_to_sync.py`", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
