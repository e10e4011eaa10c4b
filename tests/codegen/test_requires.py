"""`cbgen` in an install without its packages says in one line what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO

# Blocks one import the way a missing distribution would, then runs the console script.
RUN = "import sys; sys.modules[{module!r}] = None; from cbgen.cli import main; main()"


@pytest.mark.parametrize(
    ("module", "distribution"), [("jinja2", "jinja2"), ("yaml", "PyYAML"), ("ruff", "ruff")]
)
@pytest.mark.parametrize("args", [["generate"], ["scaffold"], ["docs", "--help"]])
def test_a_missing_package_is_one_line(module: str, distribution: str, args: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-c", RUN.format(module=module), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (p.returncode, p.stdout, p.stderr) == (
        1,
        "",
        f"cbgen: {distribution} is not installed, and cbgen needs it: "
        'pip install "cbus[codegen]"\n',
    )
