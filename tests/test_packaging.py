"""The wheel users install: it must carry what an editable install finds in the tree.

An editable install reads the source folders, so a file missing from the wheel goes
unnoticed in development: without `cbus/py.typed`, mypy treats all of cbus (and the
generated code built on it) as untyped in every user's project.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_type_markers_sql_and_templates(tmp_path: Path) -> None:
    # From a copy: setuptools keeps files from earlier builds in `build/`.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("runtime", "codegen"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    # Data folders left out of `packages` draw a screenful of warnings on every install.
    assert "absent from the `packages` configuration" not in built.stderr, built.stderr
    [wheel] = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "cbus/py.typed",
        "cbgen/py.typed",
        *(f"cbus/sql/{p.name}" for p in (REPO / "runtime/cbus/sql").glob("*.sql")),
        *(f"cbgen/templates/{p.name}" for p in (REPO / "codegen/cbgen/templates").glob("*.jinja")),
        # The console works offline: every template and asset is in the wheel.
        *(
            f"cbus/console/{p.parent.name}/{p.name}"
            for p in (REPO / "runtime/cbus/console").glob("[st]*/*")
        ),
    }
    assert expected <= names, sorted(expected - names)
