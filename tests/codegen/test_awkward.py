"""Schemas that are valid but awkward to render: the `awkward` case, both model styles.

Descriptions, defaults and patterns holding quotes, backslashes and control
characters; domains named `uuid` and `typing`, like modules the generated code
imports; enum values YAML would read as bools; a field named `l`. The package must
pass ruff (this repository's rules) and `mypy --strict`, and keep every text as written.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cbus
import cbus.codec
import pytest

from .conftest import assert_lint_and_types_pass, case_package


@pytest.fixture(scope="module", params=["dataclass", "struct"])
def awkward(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    with case_package(tmp_path_factory, "awkward", request.param) as package:
        yield package


def test_ruff_and_mypy_pass(awkward: tuple[Path, str]) -> None:
    assert_lint_and_types_pass(*awkward)


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
