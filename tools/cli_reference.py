"""Write docs/cli.md, the reference of the `cbus` and `cbgen` commands, from click itself.

    python tools/cli_reference.py          # (re)write docs/cli.md
    python tools/cli_reference.py --check  # exit 1, with a diff, when docs/cli.md is stale

Every command and group, in the order click lists them, with its `--help` text as
click prints it at a fixed width (the terminal's does not count), so the page
cannot drift from the code: `make test` runs `--check`.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "cli.md"
WIDTH = 88

HEADER = """# Command-line reference

Generated from the commands themselves by `tools/cli_reference.py` (`make test`
checks it is current): do not edit by hand. Every `cbus` command reads its DSN from
`CBUS_DSN` when `--dsn` is not given, and reports a mistake in one line with a
non-zero exit status.
"""


def _commands(
    command: click.Command, path: list[str]
) -> list[tuple[list[str], click.Command, click.Context]]:
    """The command and, for a group, every command under it, depth first."""
    found: list[tuple[list[str], click.Command, click.Context]] = []

    def walk(cmd: click.Command, names: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(
            cmd, info_name=names[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
        )
        found.append((names, cmd, ctx))
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*names, name], ctx)

    walk(command, path, None)
    return found


def _anchor(names: list[str]) -> str:
    return "-".join(names)


def render() -> str:
    sys.path.insert(0, str(ROOT / "runtime"))
    sys.path.insert(0, str(ROOT / "codegen"))
    from cbgen.cli import main as cbgen_main
    from cbus.cli import main as cbus_main

    parts = [HEADER]
    sections = []
    index = []
    for top, command in (("cbus", cbus_main), ("cbgen", cbgen_main)):
        for names, cmd, ctx in _commands(command, [top]):
            title = " ".join(names)
            short = cmd.get_short_help_str(limit=WIDTH)
            index.append(f"- [`{title}`](#{_anchor(names)}): {short}")
            help_text = cmd.get_help(ctx).rstrip()
            sections.append(f"## `{title}`\n\n```text\n{help_text}\n```\n")
    parts.append("\n".join(index) + "\n")
    parts.extend(sections)
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text("utf-8") if TARGET.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            "docs/cli.md",
            "docs/cli.md (from the commands)",
        )
        sys.stdout.writelines(diff)
        print("docs/cli.md is stale: run `python tools/cli_reference.py`", file=sys.stderr)
        return 1
    TARGET.write_text(text, "utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
