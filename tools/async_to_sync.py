#!/usr/bin/env python3
"""Write the sync twin of each `*_async.py` module, as psycopg's tool of the same name does.

Async is the source: `X_async.py` becomes `X.py`, for the runtime and for tests. The
rewrite works on the concrete syntax tree (`libcst`), never on the text, so the twin
keeps the source's comments, strings and layout: `async def/with/for` become plain,
`await` is dropped, names (identifiers, attributes, imports) are renamed by one table,
and the body of an `if True:  # ASYNC` block gives way to its `else:` side. Strings are
left as they are, but for `__all__`, docstrings and string type expressions (a
`TypeAlias` value, a quoted annotation), where the table's names are renamed too.
Comments are never touched. The output is ruff-formatted.

`--check` writes nothing and exits 1 when a twin is stale, when a source is missing,
or when a file carrying this tool's header is not among the outputs it knows.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import libcst as cst
import libcst.matchers as m

ROOT = Path(__file__).resolve().parent.parent

# Every async source this tool owns; each `X_async.py` gives `X.py` beside it.
SOURCES = [
    "runtime/cbus/bus_async.py",
    "runtime/cbus/outcomes_async.py",
    "runtime/cbus/waiting_async.py",
    "runtime/cbus/_handler_conn_async.py",
    "runtime/cbus/_worker_record_async.py",
    "runtime/cbus/_worker_state_async.py",
    "runtime/cbus/_heartbeat_async.py",
    "runtime/cbus/_rate_async.py",
    "runtime/cbus/_scheduler_async.py",
    "runtime/cbus/_consume_async.py",
    "runtime/cbus/_supervise_async.py",
    "runtime/cbus/_worker_async.py",
    "runtime/cbus/_pruner_async.py",
]

# The one sync/async name table: names, attributes, imported names and modules.
NAMES = {
    "AsyncBus": "Bus",
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncContext": "Context",
    "AsyncHandlers": "Handlers",
    "AsyncTarget": "SyncTarget",
    "AsyncWaitTarget": "WaitTarget",
    "check_async": "check",
    "joined_async": "joined",
    "listener_async": "listener",
    "AsyncWorker": "SyncWorker",
    "AsyncCursor": "Cursor",
    "AsyncServerCursor": "ServerCursor",
    "AsyncIterator": "Iterator",
    "AEvent": "Event",
    "ALock": "Lock",
    "aspawn": "spawn",
    "aexecute_bare": "execute_bare",
    "abounded": "bounded",
    "acancelled_by_worker": "cancelled_by_worker",
    "acancel": "cancel",
    "agather": "gather",
    "asleep": "sleep",
    "await_notifies": "wait_notifies",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "send_async": "send",
    "send_many_async": "send_many",
    "send_cursor_async": "send_cursor",
    "get_command_async": "get_command",
    "commands_ended_async": "commands_ended",
    "outcomes_async": "outcomes",
    "waiting_async": "waiting",
    "wait_for_async": "wait_for",
    "wait_batch_async": "wait_batch",
    "batch_status_async": "batch_status",
    "trace_async": "trace",
    "asynccontextmanager": "contextmanager",
    "bus_async": "bus",
    "prune_async": "prune",
    "known_domains_async": "known_domains",
    "prune_in_background_async": "prune_in_background",
}
# An async source's module name, where another imports it, becomes its twin's.
NAMES.update({Path(src).stem: Path(src).stem.removesuffix("_async") for src in SOURCES})

HEADER = "# Generated from {src} by tools/async_to_sync.py.\n# DO NOT EDIT: change {src} instead.\n"
_HEADER_MARK = "by tools/async_to_sync.py."
_WORDS = re.compile(r"\b(" + "|".join(sorted(NAMES, key=len, reverse=True)) + r")\b")


def _rename(name: str) -> str:
    return NAMES.get(name, name)


def _words(text: str) -> str:
    return _WORDS.sub(lambda match: NAMES[match.group(1)], text)


def _is_async_marker(node: cst.If) -> bool:
    """`if True:  # ASYNC`: the body is the async side, the `else:` the sync one."""
    if not m.matches(node.test, m.Name("True")) or not isinstance(node.body, cst.IndentedBlock):
        return False
    comment = node.body.header.comment
    return comment is not None and comment.value.strip() == "# ASYNC"


class _ToSync(cst.CSTTransformer):
    def __init__(self) -> None:
        self._typing = 0  # inside a string that is a type expression, __all__ or a docstring

    def leave_FunctionDef(
        self, original: cst.FunctionDef, updated: cst.FunctionDef
    ) -> cst.FunctionDef:
        return updated.with_changes(asynchronous=None)

    def leave_With(self, original: cst.With, updated: cst.With) -> cst.With:
        return updated.with_changes(asynchronous=None)

    def leave_For(self, original: cst.For, updated: cst.For) -> cst.For:
        return updated.with_changes(asynchronous=None)

    def leave_Await(self, original: cst.Await, updated: cst.Await) -> cst.BaseExpression:
        return updated.expression.with_changes(lpar=updated.lpar, rpar=updated.rpar)

    def leave_If(
        self, original: cst.If, updated: cst.If
    ) -> cst.BaseStatement | cst.FlattenSentinel[cst.BaseStatement] | cst.RemovalSentinel:
        if not _is_async_marker(original):
            return updated
        if updated.orelse is None:
            return cst.RemoveFromParent()
        if isinstance(updated.orelse, cst.If):
            return updated.orelse
        body = updated.orelse.body
        assert isinstance(body, cst.IndentedBlock)
        return cst.FlattenSentinel(body.body)

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return updated.with_changes(value=NAMES.get(updated.value, updated.value))

    def _renames_strings(self, node: cst.CSTNode) -> bool:
        return bool(
            m.matches(node, m.Assign(targets=[m.AssignTarget(target=m.Name("__all__"))]))
            or m.matches(node, m.AnnAssign(annotation=m.Annotation(m.Name("TypeAlias"))))
            or m.matches(node, m.Annotation())
            or m.matches(node, m.SimpleStatementLine(body=[m.Expr(m.SimpleString())]))
        )

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self._renames_strings(node):
            self._typing += 1
        return super().on_visit(node)

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> object:
        if self._renames_strings(original):
            self._typing -= 1
        return super().on_leave(original, updated)

    def leave_SimpleString(
        self, original: cst.SimpleString, updated: cst.SimpleString
    ) -> cst.SimpleString:
        if not self._typing:
            return updated
        value = _words(updated.value).replace("The async twin of", "The sync twin of")
        return updated.with_changes(value=value)


def convert(text: str, src: str) -> str:
    module = cst.parse_module(text).visit(_ToSync())
    out = HEADER.format(src=Path(src).name) + module.code
    # Renamed imports may no longer be in order: sort them, then format.
    for args in (["check", "--fix", "--select", "I", "--quiet", "--exit-zero"], ["format"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--stdin-filename", "x.py", "-"],
            input=out,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        out = proc.stdout
    return out


def output_of(src: str) -> str:
    if not src.endswith("_async.py"):
        raise SystemExit(f"{src}: an async source must be named X_async.py")
    return src.removesuffix("_async.py") + ".py"


def _unlisted(outputs: set[str]) -> list[str]:
    """Files that carry this tool's header but are no twin it writes."""
    found = []
    for folder in ("runtime", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            with path.open(encoding="utf-8") as f:
                head = f.readline()
            if _HEADER_MARK in head and rel not in outputs:
                found.append(rel)
    return found


def main(argv: list[str]) -> int:
    global ROOT
    check = "--check" in argv
    if "--root" in argv:  # for the tool's own tests: another tree laid out like this one
        ROOT = Path(argv[argv.index("--root") + 1]).resolve()
    problems = 0
    outputs = {output_of(src) for src in SOURCES}
    for src in SOURCES:
        if not (ROOT / src).exists():
            print(f"{src}: listed as an async source but missing", file=sys.stderr)
            problems += 1
            continue
        dst = output_of(src)
        new = convert((ROOT / src).read_text("utf-8"), src)
        target = ROOT / dst
        old = target.read_text("utf-8") if target.exists() else ""
        if old == new:
            continue
        if check:
            problems += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), f"a/{dst}", f"b/{dst} (from {src})"
                )
            )
        else:
            target.write_text(new, "utf-8")
            print(f"wrote {dst}")
    for rel in _unlisted(outputs):
        print(f"{rel}: has the generated header but no source lists it", file=sys.stderr)
        problems += 1
    if problems:
        print(
            f"{problems} problem(s) with the sync twins: run `python tools/async_to_sync.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
