"""`make demo`: says which failures are deliberate, and `--keep` leaves its server up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def test_demo_keep_leaves_the_server_running_until_interrupted() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CBUS_DSN"}
    with subprocess.Popen(
        [sys.executable, "examples/demo.py", "--commands", "1000", "--keep"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as demo:
        try:
            _check_kept(demo)
        finally:
            if demo.poll() is None:
                demo.kill()


def _check_kept(demo: subprocess.Popen[str]) -> None:
    """Read the demo up to its Ctrl-C prompt, look at its server, then interrupt it."""
    assert demo.stdout is not None
    lines: list[str] = []
    for line in demo.stdout:
        lines.append(line)
        if line.startswith("press Ctrl-C"):
            break
    out = "".join(lines)
    assert "failed and troubleshooting commands are deliberate" in out, out
    found = re.search(r"export CBUS_DSN='([^']+)'", out)
    assert found, out
    assert "cbus tsq list" in out and "psql '" in out
    # The server is still up: its troubleshooting queue holds the discontinued order.
    with psycopg.connect(found[1]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cbus.command WHERE status = 'IN_TROUBLESHOOTING_QUEUE'"
        ).fetchone()
    assert row == (1,)
    demo.send_signal(signal.SIGINT)
    assert demo.wait(60) == 0
