"""Fixtures of the cbgen tests: a scratch project, the CLI, generated packages.

None of these tests needs a database.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbgen.cli import main
from cbgen.output import format_python, write_tree
from cbgen.pipeline import compile_schemas
from cbgen.render import render_package
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "cases"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def cbgen(*args: str) -> Result:
    """Run `cbgen ARGS` in process, in the current folder."""
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (the working directory) with `[tool.cbgen]`."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.cbgen]\nschemas = "schemas"\nout = "generated"\npackage = "app"\n'
    )
    (tmp_path / "schemas").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder`, by relative path, caches left out."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@dataclass
class Generated:
    """A package generated from the kitchen case (every feature) and the repo schemas."""

    root: Path
    name: str
    models: str
    kitchen: ModuleType
    extra: ModuleType


def _ruff_settings() -> str:
    """The repository's `[tool.ruff]` tables, so a scratch project lints as this one."""
    ruff = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"].get("ruff", {})
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict))
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    table("tool.ruff", ruff)
    return "\n".join(lines) + "\n"


def generate_case(root: Path, name: str, models: str, case: str = "kitchen") -> Path:
    """Generate `cases/CASE` as the package `root/name`, formatted as this repo's code."""
    (root / "pyproject.toml").write_text(_ruff_settings())
    schemas = sorted(CASES.joinpath(case).glob("*.yaml"))
    pkg = compile_schemas(schemas, CASES, name, models)
    target = root / name
    write_tree(target, format_python(render_package(pkg), target))
    return target


@contextmanager
def case_package(
    factory: pytest.TempPathFactory, case: str, models: str
) -> Iterator[tuple[Path, str]]:
    """Generate `cases/CASE` as the package `CASE_MODELS`, importable within the block.

    Gives (root, package name): the package is the folder `root/name`.
    """
    root = factory.mktemp(f"{case}_{models}")
    name = f"{case}_{models}"
    generate_case(root, name, models, case=case)
    sys.path.insert(0, str(root))
    try:
        yield root, name
    finally:
        sys.path.remove(str(root))


_FAKE_PGCONN: Any = types.SimpleNamespace(
    host=b"fake", port=b"0", db=b"fake", status=psycopg.pq.ConnStatus.BAD
)


class _Cursor:
    """What a sender executes on: records the parameters on its connection."""

    closed = False

    def __init__(self, params: list[dict[str, Any]]) -> None:
        self._params = params

    def execute(self, query: object, params: dict[str, Any]) -> _Cursor:
        self._params.append(params)
        return self

    def fetchone(self) -> tuple[int]:
        return (7,)


class FakeConn(psycopg.Connection[Any]):
    """Stands for a connection: records what a sender would execute (never connects)."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.pgconn = _FAKE_PGCONN  # what the NOTIFY window (cbus._wake) keys on

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return _Cursor(self.params)


class _AsyncCursor:
    closed = False

    def __init__(self, params: list[dict[str, Any]]) -> None:
        self._params = params

    async def execute(self, query: object, params: dict[str, Any]) -> _AsyncCursor:
        self._params.append(params)
        return self

    async def fetchone(self) -> tuple[int]:
        return (7,)


class FakeAsyncConn(psycopg.AsyncConnection[Any]):
    """Stands for an async connection: records what a sender would execute (never connects)."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.pgconn = _FAKE_PGCONN

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return _AsyncCursor(self.params)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command and return its output; the test fails with it unless it exits 0."""
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def assert_lint_and_types_pass(root: Path, name: str) -> None:
    """`ruff check`, `ruff format --check` and `mypy --strict` pass over `root/name`."""
    ruff = str(Path(sys.executable).parent / "ruff")
    run(ruff, "check", "--no-cache", ".", cwd=root / name)
    run(ruff, "format", "--check", "--no-cache", ".", cwd=root / name)
    runtime = Path(cbus.__file__).resolve().parents[1]
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(runtime), str(root)])}
    cache = str(root / ".mypy_cache")
    args = ["--strict", "--no-error-summary", "--cache-dir", cache, "-p", name]
    assert run(sys.executable, "-m", "mypy", *args, cwd=root, env=env) == ""


@pytest.fixture(scope="session", params=["dataclass", "struct"])
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generated]:
    models: str = request.param
    root = tmp_path_factory.mktemp(f"gen_{models}")
    name = f"kitchen_{models}"
    generate_case(root, name, models)
    sys.path.insert(0, str(root))
    try:
        kitchen = importlib.import_module(f"{name}.kitchen")
        extra = importlib.import_module(f"{name}.extra")
        yield Generated(root, name, models, kitchen, extra)
    finally:
        sys.path.remove(str(root))
