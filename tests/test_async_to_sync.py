"""The sync-twin tool: it converts on the syntax tree and knows every file it owns."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "async_to_sync.py"


def _tree(tmp_path: Path) -> Path:
    for rel in ("runtime/cbus", "tests"):
        (tmp_path / rel).mkdir(parents=True)
    for src in (ROOT / "runtime" / "cbus").glob("*_async.py"):
        shutil.copy(src, tmp_path / "runtime" / "cbus" / src.name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_committed_twins_are_current() -> None:
    proc = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_on_a_missing_source(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert _run(root).returncode == 0
    (root / "runtime" / "cbus" / "waiting_async.py").unlink()
    proc = _run(root, "--check")
    assert proc.returncode == 1
    assert "runtime/cbus/waiting_async.py: listed as an async source but missing" in proc.stderr


def test_check_fails_on_an_unlisted_generated_file(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert _run(root).returncode == 0
    stray = root / "runtime" / "cbus" / "stray.py"
    stray.write_text((root / "runtime" / "cbus" / "bus.py").read_text())
    proc = _run(root, "--check")
    assert proc.returncode == 1
    assert "runtime/cbus/stray.py: has the generated header but no source lists it" in proc.stderr


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "async def f(c: AsyncConnection) -> None:\n    await c.aclose()\n",
            "def f(c: Connection) -> None:\n    c.close()\n",
        ),
        (
            'x = "AsyncBus in a string stays"  # and AsyncBus in a comment\n',
            'x = "AsyncBus in a string stays"  # and AsyncBus in a comment\n',
        ),
        ('__all__ = ["AsyncBus", "send_async"]\n', '__all__ = ["Bus", "send"]\n'),
        ('T: TypeAlias = "AsyncBus | None"\n', 'T: TypeAlias = "Bus | None"\n'),
        ("if True:  # ASYNC\n    a = 1\nelse:\n    a = 2\n", "a = 2\n"),
        (
            "async def g():\n    async with x() as y:\n"
            "        async for z in y:\n            pass\n",
            "def g():\n    with x() as y:\n        for z in y:\n            pass\n",
        ),
    ],
)
def test_conversion(tmp_path: Path, source: str, expected: str) -> None:
    sys.path.insert(0, str(TOOL.parent))
    try:
        import async_to_sync
    finally:
        sys.path.pop(0)
    out = async_to_sync.convert(source, "x_async.py")
    assert out.split("\n", 2)[2] == expected
