"""The old side of `cbgen breaking`: the schema files at a git revision or in a folder.

A git revision is read with `git show REF:path` (no checkout), from the repository
the current schemas are in; the files are those of the same paths at REF (a folder
argument lists its `*.yaml` files at REF). Old files are named like the current
ones, so a finding on an old line reads like any other.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RefError", "read_against"]


class RefError(Exception):
    """REF cannot be read: a usage error (exit 2)."""


def _git(args: Sequence[str], cwd: Path) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise RefError(f"Cannot run git: {exc}") from exc
    if done.returncode != 0:
        raise RefError(
            done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "git failed"
        )
    return done.stdout


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _from_folder(folder: Path) -> list[tuple[str, str]]:
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    return [(_shown(f), f.read_text(encoding="utf-8")) for f in files]


def _from_git(ref: str, paths: Sequence[Path]) -> list[tuple[str, str]]:
    start = paths[0] if paths and paths[0].is_dir() else (paths[0].parent if paths else Path.cwd())
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], start.resolve()).strip())
    except RefError as exc:
        raise RefError(
            f"`{ref}` is not a folder, and the schemas are not in a git repository"
        ) from exc
    try:
        _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top)
    except RefError as exc:
        raise RefError(f"`{ref}` is neither a folder nor a git revision") from exc
    out: list[tuple[str, str]] = []
    for p in paths:
        rel = p.resolve().relative_to(top.resolve()).as_posix() if p.exists() else None
        if rel is None:
            continue
        if p.is_dir():
            listed = _git(["ls-tree", "--name-only", ref, "--", f"{rel}/"], top).splitlines()
            names = [n for n in listed if n.endswith((".yaml", ".yml"))]
        else:
            names = [rel]
        for name in names:
            try:
                text = _git(["show", f"{ref}:{name}"], top)
            except RefError:
                continue  # a file added since REF
            out.append((_shown(top / name), text))
    return out


def read_against(ref: str, paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(file name, YAML text) of each schema file at REF."""
    folder = Path(ref)
    if folder.is_dir():
        return _from_folder(folder)
    return _from_git(ref, paths)
