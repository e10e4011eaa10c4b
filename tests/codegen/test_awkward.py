"""Schemas that are valid but awkward to render: the `awkward` case, both model styles.

Descriptions, defaults and patterns holding quotes, backslashes and control
characters; domains named `uuid` and `typing`, like modules the generated code
imports; enum values YAML would read as bools; a field named `l`. The package must
pass ruff (this repository's rules) and `mypy --strict`, and keep every text as written.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cbus
import cbus.codec
import pytest

from .conftest import generate_case


@pytest.fixture(scope="module", params=["dataclass", "struct"])
def awkward(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    models: str = request.param
    root = tmp_path_factory.mktemp(f"awkward_{models}")
    name = f"awkward_{models}"
    generate_case(root, name, models, case="awkward")
    sys.path.insert(0, str(root))
    try:
        yield root, name
    finally:
        sys.path.remove(str(root))


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_ruff_and_mypy_pass(awkward: tuple[Path, str]) -> None:
    root, name = awkward
    ruff = str(Path(sys.executable).parent / "ruff")
    _run(ruff, "check", "--no-cache", ".", cwd=root / name)
    _run(ruff, "format", "--check", "--no-cache", ".", cwd=root / name)
    runtime = Path(cbus.__file__).resolve().parents[1]
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(runtime), str(root)])}
    cache = str(root / ".mypy_cache")
    args = ["--strict", "--no-error-summary", "--cache-dir", cache, "-p", name]
    assert _run(sys.executable, "-m", "mypy", *args, cwd=root, env=env) == ""


def _module(name: str, domain: str) -> ModuleType:
    return importlib.import_module(f"{name}.{domain}")


def test_texts_are_kept_as_written(awkward: tuple[Path, str]) -> None:
    _, name = awkward
    edge = _module(name, "edge")
    assert edge.__doc__ == 'Text that is hard to quote: """'
    assert edge.Ask.__doc__ == '"""'
    lines = [line.lstrip(" ") for line in edge.Answer.__doc__.splitlines()]
    assert lines == ["A carriage return", 'and a tab\there, a backslash \\ and """ inside', ""]
    assert edge.Box.__doc__ == 'ends with a quote "'
    assert edge.Box().l == 'cr\r nul\0 bell\a quotes """ backslash \\'
    assert _module(name, "uuid").Thing.__doc__ == 'Ends in three quotes """'
    assert edge.DOMAIN.description == 'Text that is hard to quote: """'
    assert edge.DOMAIN.by_kind()["edge.Ask"].description == '"""'


def test_domains_named_like_imported_modules(awkward: tuple[Path, str]) -> None:
    _, name = awkward
    edge, typing_, uuid_ = (_module(name, d) for d in ("edge", "typing", "uuid"))
    package = importlib.import_module(name)
    assert package.__all__ == ["edge", "typing", "uuid"]
    assert package.typing is typing_
    cmd = edge.Ask(thing=uuid_.Thing(x=2), hint=typing_.Hint(thing=None))
    assert (cmd.a, cmd.b, cmd.l) == (edge.Answer.YES, [edge.Answer.NO, edge.Answer.MAYBE], 1)
    assert uuid_.MakeThing().thing == uuid_.Thing(x=1)
    data = cbus.codec.encode(cmd)
    assert b'"l":1' in data  # the wire name is the schema's
    assert cbus.codec.decode(data, edge.Ask) == cmd
