"""The `cbgen` command: generate, scaffold, docs.

Settings come from `[tool.cbgen]` in the nearest `pyproject.toml` (keys `schemas`,
`out`, `package`, `models`, and `handlers` for `cbgen scaffold`; paths relative to
that file), then from the command line. Schema errors are printed one per line,
`FILE:LINE:COL: message`, and the command exits with status 1 having written nothing.
"""

from __future__ import annotations

import keyword
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from . import MODEL_STYLES, SchemaError, __version__, requires

# The modules that need jinja2, PyYAML or ruff are imported by the commands, once
# `_Main.main` has checked that those are installed.

__all__ = ["main"]

CONFIG_KEYS = ("schemas", "out", "package", "models", "handlers")
# Third-party modules the generated code imports: a package of that name would hide them.
IMPORTED = ("cbus", "msgspec", "psycopg")


@dataclass
class Config:
    root: Path
    schemas: list[Path]
    out: Path
    package: str
    models: str
    handlers: Path


def _find_pyproject(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _fail(message: str) -> NoReturn:
    click.echo(f"cbgen: {message}", err=True)
    sys.exit(1)


def load_config(
    schemas: Sequence[str],
    out: str | None,
    package: str | None,
    models: str | None,
    handlers: str | None = None,
) -> Config:
    """Merge `[tool.cbgen]` and the command line; command-line values win."""
    pyproject = _find_pyproject(Path.cwd())
    table: dict[str, Any] = {}
    root = Path.cwd()
    if pyproject is not None:
        root = pyproject.parent
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            _fail(f"Cannot read {pyproject}: {exc}")
        table = data.get("tool", {}).get("cbgen", {})
        for key in table:
            if key not in CONFIG_KEYS:
                from .problems import hint

                _fail(f"Unknown key `{key}` in [tool.cbgen] of {pyproject}{hint(key, CONFIG_KEYS)}")

    def setting(key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            _fail(f"Expected `str` for `{key}` in [tool.cbgen], got `{type(value).__name__}`")
        return value

    schema_paths = [Path(s) for s in schemas] or [root / setting("schemas", "schemas")]
    cfg = Config(
        root=root,
        schemas=schema_paths,
        out=Path(out) if out is not None else root / setting("out", "generated"),
        package=package if package is not None else setting("package", "commands"),
        models=models if models is not None else setting("models", "dataclass"),
        handlers=Path(handlers) if handlers is not None else root / setting("handlers", "handlers"),
    )
    if not cfg.package.isidentifier() or keyword.iskeyword(cfg.package):
        _fail(f"Invalid package name `{cfg.package}`: expected a Python identifier")
    if cfg.package in sys.stdlib_module_names:
        _fail(
            f"Invalid package name `{cfg.package}`: "
            f"it would shadow the standard library module `{cfg.package}`"
        )
    if cfg.package in IMPORTED:
        _fail(
            f"Invalid package name `{cfg.package}`: "
            f"it would shadow `{cfg.package}`, which the generated code imports"
        )
    if cfg.models not in MODEL_STYLES:
        _fail(f"Invalid models `{cfg.models}`: expected `dataclass` or `struct`")
    return cfg


def schema_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders as their `*.yaml` files, sorted."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                _fail(f"No schema files (*.yaml) in {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            _fail(f"No such schema file or folder: {p}")
    unique: dict[Path, None] = dict.fromkeys(f.resolve() for f in files)
    return [Path(f) for f in unique]


def _compile(cfg: Config) -> Any:
    from .pipeline import compile_schemas

    try:
        return compile_schemas(schema_files(cfg.schemas), cfg.root, cfg.package, cfg.models)
    except SchemaError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        n = len(exc.errors)
        click.echo(f"{n} error{'s' if n != 1 else ''}; nothing written", err=True)
        sys.exit(1)


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


_schemas_arg = click.argument("schemas", nargs=-1, type=click.Path())
_package_opt = click.option("--package", help="Import name of the generated package.")


class _Main(click.Group):
    """The `cbgen` group: says in one line what to install when a package is missing."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        absent = requires.missing()
        if absent is not None:
            _fail(f"{absent} is not installed, and cbgen needs it: {requires.INSTALL}")
        return super().main(*args, **kwargs)


@click.group(cls=_Main)
@click.version_option(__version__, prog_name="cbgen")
def main() -> None:
    """Generate typed cbus commands, senders and handler stubs from YAML schemas."""


@main.command()
@_schemas_arg
@click.option("--out", help="Folder that receives the package (default: generated).")
@_package_opt
@click.option("--models", type=click.Choice(MODEL_STYLES), help="Model classes to generate.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a diff when stale.")
def generate(
    schemas: tuple[str, ...],
    out: str | None,
    package: str | None,
    models: str | None,
    check: bool,
) -> None:
    """Generate the package OUT/PACKAGE from SCHEMA files or folders."""
    from .output import diff, write_tree
    from .pipeline import package_files

    cfg = load_config(schemas, out, package, models)
    pkg = _compile(cfg)
    target = cfg.out / cfg.package
    shown = _shown(target)
    for folder in (target, *target.parents):
        if folder.exists() and not folder.is_dir():
            _fail(f"Cannot write {shown}: {_shown(folder)} is a file, not a folder")
    files = package_files(pkg, target)
    if check:
        delta = diff(target, files, shown)
        if delta:
            click.echo(delta, nl=False)
            click.echo(f"{shown} is stale or was edited by hand: run `cbgen generate`", err=True)
            sys.exit(1)
        click.echo(f"{shown} is up to date")
        return
    try:
        written = write_tree(target, files)
    except OSError as exc:
        _fail(f"Cannot write {shown}: {exc.strerror or exc}")
    if written:
        click.echo(f"Wrote {shown} ({len(files)} files, {len(pkg.modules)} domains)")
    else:
        click.echo(f"{shown} is up to date")


@main.command("scaffold")
@_schemas_arg
@_package_opt
@click.option(
    "--dir",
    "folder",
    help="Folder of handler files, instead of `handlers` in [tool.cbgen].",
)
@click.option("--async", "is_async", is_flag=True, help="Subclass the asyncio handler stubs.")
def scaffold_cmd(
    schemas: tuple[str, ...], package: str | None, folder: str | None, is_async: bool
) -> None:
    """Write handler implementation files once; list commands not implemented yet.

    Files go to --dir, else to the folder that `handlers` in [tool.cbgen] names,
    relative to pyproject.toml (default: `handlers`). A file that exists is never
    overwritten.
    """
    from .scaffold import scaffold

    cfg = load_config(schemas, None, package, None, folder)
    pkg = _compile(cfg)
    report = scaffold(pkg, Path(_shown(cfg.handlers)), is_async=is_async)
    for line in report:
        click.echo(line)


@main.command("docs")
@_schemas_arg
@click.option(
    "--out", default="docs/commands", show_default=True, help="Folder of the Markdown files."
)
@_package_opt
def docs_cmd(schemas: tuple[str, ...], out: str, package: str | None) -> None:
    """Write a Markdown reference per domain."""
    from .docs import render_docs

    cfg = load_config(schemas, None, package, None)
    pkg = _compile(cfg)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in render_docs(pkg).items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {_shown(path)}")


@main.command("breaking")
@_schemas_arg
@click.option("--against", "ref", required=True, help="A git revision or a folder of schemas.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def breaking_cmd(schemas: tuple[str, ...], ref: str, as_json: bool) -> None:
    """Report the changes since REF that break queued messages or deployed senders.

    Exit 0 when there are none, 1 when there are, 2 when REF or a schema cannot be read.
    """
    import json

    from .against import RefError, read_against
    from .breaking import compare
    from .pipeline import load_schemas, load_sources

    cfg = load_config(schemas, None, None, None)
    paths = schema_files(cfg.schemas)
    try:
        old_sources = read_against(ref, cfg.schemas)
        new = load_schemas(paths, cfg.root)
        old = load_sources(old_sources)
    except RefError as exc:
        click.echo(f"cbgen: {exc}", err=True)
        sys.exit(2)
    except SchemaError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo("cbgen: cannot compare schemas that do not load", err=True)
        sys.exit(2)
    found = compare(old, new)
    if as_json:
        click.echo(json.dumps([f.as_json() for f in found], indent=2))
    else:
        for f in found:
            click.echo(str(f))
    sys.exit(1 if found else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
