"""Output: generated sources formatted by ruff in memory, compared, written atomically.

Everything is formatted in memory first, so the bytes do not depend on what is on
disk, `--check` is a plain comparison, and a formatting failure leaves the previous
package untouched. Each file is written beside its destination and renamed into
place; files cbgen did not generate are never removed.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from .model import HEADER_START

__all__ = ["diff", "format_python", "write_tree"]


@cache
def _ruff() -> str:
    """The ruff binary of the `ruff` package cbgen depends on, never the one on PATH.

    The formatting is part of the output: with one pinned ruff, found from its own
    package, the bytes do not depend on what else the machine has installed.
    """
    from ruff import find_ruff_bin  # type: ignore[import-untyped]

    return os.fsdecode(find_ruff_bin())


def _format_one(ruff: str, source: str, filename: Path) -> str:
    """`ruff format`, then `ruff check --fix`, both on stdin.

    Both use the ruff settings that apply to `filename`, so the result passes the
    project's own `ruff check` and `ruff format --check` (import order included).
    What the schema fixes and ruff cannot (lines made long by descriptions or
    patterns, E501; a field named `l`, E741, whose name is its wire name) earns a
    file-level `noqa`, only for the rules the project checks at all.
    """
    common = ["--stdin-filename", str(filename), "-"]
    fmt = subprocess.run(
        [ruff, "format", "--quiet", *common], input=source.encode(), capture_output=True
    )
    if fmt.returncode != 0:
        raise RuntimeError(
            f"ruff format failed on generated {filename} (a cbgen bug):\n"
            + fmt.stderr.decode(errors="replace")
        )
    check = subprocess.run(
        [ruff, "check", "--fix", "--exit-zero", "--output-format", "concise", *common],
        input=fmt.stdout,
        capture_output=True,
    )
    text = (check.stdout if check.returncode == 0 and check.stdout else fmt.stdout).decode()
    report = check.stderr.decode(errors="replace")
    codes = [code for code in _FILE_NOQA if f" {code} " in report]
    if codes:
        text = text.replace(_MARKER, f"{_MARKER}# ruff: noqa: {', '.join(codes)}\n", 1)
    return text


_MARKER = "# @generated\n"
_FILE_NOQA = ("E501", "E741")


def format_python(files: Mapping[str, str], folder: Path) -> dict[str, bytes]:
    """Format Python sources as if they were in `folder` (so its ruff settings apply)."""
    out: dict[str, bytes] = {}
    py = [name for name in files if name.endswith(".py")]
    ruff = _ruff()  # here, not in the threads: sysconfig's first use is not thread-safe
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(py) or 1)) as pool:
        done = pool.map(lambda n: _format_one(ruff, files[n], folder / n), py)
        formatted = dict(zip(py, done, strict=True))
    for name, text in files.items():
        out[name] = formatted.get(name, text).encode()
    return out


def _ours(path: Path) -> bool:
    """A file cbgen wrote: its first line is the generated header."""
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    return first.startswith(HEADER_START.encode()) and b"DO NOT EDIT" in first


def _current(target: Path, names: Iterable[str]) -> dict[str, bytes]:
    """The files of `target` that are cbgen's: those named `names`, and `.py` files
    with its header (a domain since removed); a user's other files are not."""
    if not target.is_dir():
        return {}
    wanted = set(names)
    return {
        p.name: p.read_bytes()
        for p in sorted(target.iterdir())
        if p.is_file() and (p.name in wanted or (p.suffix == ".py" and _ours(p)))
    }


def diff(target: Path, files: Mapping[str, bytes], shown: str) -> str:
    """A unified diff from what is in `target` to `files`; empty when they agree."""
    current = _current(target, files)
    chunks: list[str] = []
    for name in sorted(set(current) | set(files)):
        old, new = current.get(name), files.get(name)
        if old == new:
            continue
        a = (old or b"").decode(errors="replace").splitlines(keepends=True)
        b = (new or b"").decode(errors="replace").splitlines(keepends=True)
        chunks.extend(
            difflib.unified_diff(
                a,
                b,
                fromfile=f"{shown}/{name}" if old is not None else "/dev/null",
                tofile=f"{shown}/{name} (generated)" if new is not None else "/dev/null",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in chunks)


def write_tree(target: Path, files: Mapping[str, bytes]) -> bool:
    """Make cbgen's files in the folder `target` equal `files`; False when they were.

    Each changed file is written beside its destination and renamed over it, so no
    file is ever half written; `.py` files cbgen generated that `files` no longer
    holds are removed. Anything else in the folder (a user's notes, sub-folders,
    `__pycache__`) is left alone.
    """
    current = _current(target, files)
    if current == dict(files):
        return False
    target.mkdir(parents=True, exist_ok=True)
    mask = os.umask(0)
    os.umask(mask)
    for name, data in files.items():
        if current.get(name) == data:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~mask)
            os.replace(tmp, target / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    for name in sorted(current.keys() - files.keys()):
        (target / name).unlink()
    return True
