"""The doc pages' Python code blocks run, so that what they say stays true.

Each ```python block of a page runs in order, in one namespace per page (a page is
one session, as a reader types it), against a fresh database with cbus and the
`shop` domains installed, whose DSN is the name `dsn`. A block right after the
comment `<!-- not-run -->` (a fragment: `...`, a framework's app) is skipped; one
after `<!-- pytest -->` is a test file, run by pytest with the `cbus.testing`
plugin, and must pass.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_BLOCK = re.compile(
    r"(?:^<!--\s*(?P<mark>[\w-]+)[^>]*-->\s*\n)?^```python[^\n]*\n(?P<code>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
MARKS = {None, "not-run", "pytest"}

pytest_plugins = ["pytester"]


def blocks(page: Path) -> list[tuple[str | None, int, str]]:
    """(mark, line, code) of each python block."""
    text = page.read_text("utf-8")
    found = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        found.append((m["mark"], line, m["code"]))
    return found


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_block_is_marked_with_a_known_mark() -> None:
    unknown = [
        f"{_name(page)}:{line}: <!-- {mark} -->"
        for page in PAGES
        for mark, line, _ in blocks(page)
        if mark not in MARKS
    ]
    assert not unknown, unknown


RUN = [p for p in PAGES if any(mark is None for mark, _, _ in blocks(p))]


@pytest.mark.parametrize("page", RUN, ids=_name)
def test_page_runs(page: Path, dsn: str, shop_orders: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "__doc__", "dsn": dsn}
    for mark, line, code in blocks(page):
        if mark is not None:
            continue
        # Line numbers of the page in a traceback.
        compiled = compile("\n" * (line - 1) + code, str(page), "exec")
        exec(compiled, namespace)


TESTS = [p for p in PAGES if any(mark == "pytest" for mark, _, _ in blocks(p))]


@pytest.mark.parametrize("page", TESTS, ids=_name)
def test_page_test_files_pass(
    page: Path, pytester: pytest.Pytester, server_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CBUS_TEST_DSN", server_dsn)
    pytester.makepyprojecttoml(
        textwrap.dedent(
            """
            [tool.cbgen]
            out = "generated"
            package = "shop"
            """
        )
    )
    (pytester.path / "generated").symlink_to(ROOT / "generated")
    files = {f"test_doc_{line}": code for mark, line, code in blocks(page) if mark == "pytest"}
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= len(files), result.stdout.str()
    assert not outcomes.get("failed") and not outcomes.get("errors"), result.stdout.str()


_YAML = re.compile(r"^```yaml[^\n]*\n(?P<code>cbus: 1\n.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def test_whole_schemas_in_the_docs_are_valid() -> None:
    """A ```yaml block that is a whole schema file (it starts with `cbus: 1`) passes cbgen."""
    pytest.importorskip("yaml")
    from cbgen.pipeline import load_sources

    found = 0
    for page in PAGES:
        text = page.read_text("utf-8")
        for m in _YAML.finditer(text):
            line = text.count("\n", 0, m.start("code")) + 1
            load_sources([(f"{_name(page)}:{line}", m["code"])])  # raises SchemaError
            found += 1
    assert found


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_links_stay_in_the_project_and_resolve() -> None:
    broken = []
    for page in PAGES:
        for m in _LINK.finditer(page.read_text("utf-8")):
            target = m["target"].split("#")[0]
            if not target or re.match(r"^[a-z]+:", target):
                continue  # an anchor, or a web address
            path = (page.parent / target).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{_name(page)}: {m['target']}")
    assert not broken, broken
