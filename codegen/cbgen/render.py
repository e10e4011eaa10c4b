"""Models to bytes on disk: jinja2 templates, ruff in memory, an atomic swap.

Everything is rendered and formatted in memory first, so the bytes do not depend
on what is on disk, `--check` is a plain comparison, and a failure leaves the
previous package untouched: files are written into a temporary folder beside the
target, which is then renamed into place.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import jinja2

from . import SchemaError
from .load import Node, load_file, load_text
from .model import Module, Package, build, check_names
from .validate import Problems, Schema, validate

__all__ = [
    "compile_schemas",
    "diff",
    "environment",
    "format_python",
    "load_schemas",
    "load_sources",
    "render_package",
    "write_tree",
]


def _pystr(value: str) -> str:
    """A double-quoted Python string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@cache
def environment() -> jinja2.Environment:
    """The one jinja2 environment: strict, whitespace-exact, filters registered once."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cbgen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pystr"] = _pystr
    return env


# -- schemas -----------------------------------------------------------------------


def _shown(path: Path, base: Path) -> str:
    """`path` relative to `base` with forward slashes, or absolute when outside it."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def load_schemas(paths: Sequence[Path], root: Path) -> list[Schema]:
    """Load and check schema files; raises SchemaError with every problem found.

    Messages name files relative to the working directory; generated headers name
    them relative to `root`, the project folder.
    """
    cwd = Path.cwd()
    shown = [_shown(p, cwd) for p in paths]
    problems = Problems(shown)
    loaded = []
    for path, display in zip(paths, shown, strict=True):
        node, errors = load_file(path, display)
        problems.items.extend(errors)
        loaded.append((display, _shown(path, root), node))
    return _checked(loaded, problems)


def load_sources(sources: Sequence[tuple[str, str]]) -> list[Schema]:
    """`load_schemas` for (file name, YAML text) pairs held in memory."""
    problems = Problems([name for name, _ in sources])
    loaded = []
    for name, text in sources:
        node, errors = load_text(text, name)
        problems.items.extend(errors)
        loaded.append((name, name, node))
    return _checked(loaded, problems)


def _checked(loaded: list[tuple[str, str, Node | None]], problems: Problems) -> list[Schema]:
    schemas = validate(loaded, problems)
    check_names(schemas, problems)
    if problems:
        raise SchemaError(problems.messages())
    return schemas


def compile_schemas(paths: Sequence[Path], root: Path, package: str, models: str) -> Package:
    return build(load_schemas(paths, root), package, models)


# -- rendering ---------------------------------------------------------------------


def render_module(module: Module) -> str:
    return environment().get_template("module.py.jinja").render(m=module)


def render_package(package: Package) -> dict[str, str]:
    """File name -> unformatted source of the generated package."""
    env = environment()
    files = {m.filename: render_module(m) for m in package.modules}
    files["__init__.py"] = env.get_template("package.py.jinja").render(p=package)
    files["py.typed"] = ""
    return dict(sorted(files.items()))


@cache
def _ruff() -> str | None:
    """The ruff of this environment (the pinned one), else the one on PATH."""
    exe = "ruff.exe" if os.name == "nt" else "ruff"
    beside = Path(sys.executable).parent / exe
    if beside.is_file():
        return str(beside)
    return shutil.which("ruff")


def _format_one(source: str, filename: Path) -> str:
    """`ruff format`, then `ruff check --fix`, both on stdin.

    Both use the ruff settings that apply to `filename`, so the result passes the
    project's own `ruff check` and `ruff format --check` (import order included).
    Lines that stay too long (long descriptions or patterns) earn a file-level
    `noqa` for E501, only when the project checks line length at all.
    """
    ruff = _ruff()
    if ruff is None:
        return source
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
    if " E501 " in check.stderr.decode(errors="replace"):
        text = text.replace(_MARKER, _MARKER + _NOQA, 1)
    return text


_MARKER = "# @generated\n"
_NOQA = "# ruff: noqa: E501\n"
_warned = False


def format_python(files: Mapping[str, str], folder: Path) -> dict[str, bytes]:
    """Format Python sources as if they were in `folder` (so its ruff settings apply)."""
    global _warned
    if _ruff() is None and not _warned:
        _warned = True
        print("cbgen: ruff not found, output left unformatted", file=sys.stderr)
    out: dict[str, bytes] = {}
    py = [name for name in files if name.endswith(".py")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(py) or 1)) as pool:
        done = pool.map(lambda n: _format_one(files[n], folder / n), py)
        formatted = dict(zip(py, done, strict=True))
    for name, text in files.items():
        out[name] = formatted.get(name, text).encode()
    return out


# -- disk --------------------------------------------------------------------------


def _current(target: Path) -> dict[str, bytes]:
    if not target.is_dir():
        return {}
    return {
        p.name: p.read_bytes()
        for p in sorted(target.iterdir())
        if p.is_file() and (p.suffix == ".py" or p.name == "py.typed")
    }


def diff(target: Path, files: Mapping[str, bytes], shown: str) -> str:
    """A unified diff from what is in `target` to `files`; empty when they agree."""
    current = _current(target)
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
    """Replace the folder `target` by `files` atomically; False when already equal."""
    if _current(target) == dict(files) and target.is_dir():
        extra = [p for p in target.iterdir() if p.name != "__pycache__" and p.name not in files]
        if not extra:
            return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            old.rmdir()
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
