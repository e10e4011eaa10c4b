"""`cbus console` as a user runs it: a real process, the token it prints, Ctrl-C."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from cbus.cli import main
from click.testing import CliRunner

from tests.runtime.mixed import Mixed

CBUS = [sys.executable, "-m", "cbus.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_console_prints_a_token_and_serves_on_localhost(dsn: str, mixed: Mixed) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CBUS_CONSOLE_TOKEN"}
    proc = subprocess.Popen(
        [*CBUS, "console", "--dsn", f"{dsn} password=pw-Secret9", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        # The DSN carries a password: the warning about `ps` comes first.
        warned = proc.stderr.readline()
        assert warned.startswith("Warning: --dsn carries a password"), warned
        first = proc.stderr.readline()
        found = re.search(rf"on http://127\.0\.0\.1:{port}/  token: (\S+)", first)
        assert found, first
        token = found.group(1)
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/api/stats",
                    headers={"Authorization": f"Bearer {token}"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200 and any(d["domain"] == "testbus" for d in r.json())
        wrong = httpx.get(
            f"http://127.0.0.1:{port}/api/stats", headers={"Authorization": "Bearer x"}
        )
        assert wrong.status_code == 401
        # A name that was rebound to 127.0.0.1 gets no answer (DNS rebinding).
        rebound = httpx.get(
            f"http://127.0.0.1:{port}/login", headers={"Host": f"evil.example:{port}"}
        )
        assert rebound.status_code == 400
        assert httpx.get(f"http://localhost:{port}/login").status_code == 200
        # An action is logged: who did what to which command.
        headers = {"Authorization": f"Bearer {token}", "X-Cbus-Operator": "ops-bot"}
        missing = httpx.post(
            f"http://127.0.0.1:{port}/commands/testbus/{uuid.uuid4()}/cancel",
            data={"reason": "x"},
            headers=headers,
        )
        assert missing.status_code == 404
        victim = mixed.tsq_rejected[0]
        done = httpx.post(
            f"http://127.0.0.1:{port}/commands/testbus/{victim}/cancel",
            data={"reason": "x"},
            headers=headers,
        )
        assert done.status_code == 303
    finally:
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "pw-Secret9" not in first + rest
    assert f"operator ops-bot canceled command {victim} in domain testbus" in rest


def test_console_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_starlette(name: str, *args: Any) -> Any:
        return None if name == "starlette" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_starlette)
    result = CliRunner().invoke(main, ["console", "--dsn", "postgresql://nowhere"])
    assert result.exit_code == 1
    assert result.output == 'Error: The console needs starlette: pip install "cbus[console]"\n'
