"""`cbgen breaking`: a table of schema pairs, each breaking rule with its quiet
counterpart, then the CLI (exit codes, --json, a folder and a git revision as REF)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cbgen.breaking import compare
from cbgen.pipeline import load_sources

from .conftest import cbgen

HEAD = "cbus: 1\ndomain: orders\n"


def cmd(body: str, name: str = "CreateOrder") -> str:
    return HEAD + f"commands:\n  {name}:\n" + "".join(f"    {line}\n" for line in body.splitlines())


def types(body: str) -> str:
    return HEAD + ("types:\n" + body if body else "types: {}\n") + "commands:\n  Ping: {}\n"


# name: (old schema, new schema, expected "LINE:COL RULE" findings; empty = quiet)
PAIRS: dict[str, tuple[str, str, list[str]]] = {
    "same": (cmd("fields: {a: int}"), cmd("fields: {a: int}"), []),
    "domain_removed": (
        cmd("fields: {a: int}"),
        cmd("{}").replace("orders", "billing"),
        ["2:9 DOMAIN_REMOVED"],
    ),
    "command_removed": (
        cmd("fields: {a: int}"),
        cmd("fields: {a: int}", "PlaceOrder"),
        ["4:3 COMMAND_REMOVED"],
    ),
    "command_renamed_with_alias": (
        cmd("fields: {a: int}"),
        cmd("fields: {a: int}\naliases: [orders.CreateOrder]", "PlaceOrder"),
        [],
    ),
    "renamed_with_alias_still_compared": (
        cmd("fields: {a: int}"),
        cmd("fields: {a: string}\naliases: [orders.CreateOrder]", "PlaceOrder"),
        ["5:17 FIELD_TYPE_CHANGED"],
    ),
    "command_added": (cmd("fields: {a: int}"), cmd("fields: {a: int}") + "  Other: {}\n", []),
    "type_removed": (types("  Money: {fields: {a: int}}\n"), types(""), ["4:3 TYPE_REMOVED"]),
    "type_added": (types(""), types("  Money: {fields: {a: int}}\n"), []),
    "int_to_string": (
        cmd("fields: {a: int}"),
        cmd("fields: {a: string}"),
        ["5:17 FIELD_TYPE_CHANGED"],
    ),
    "int_to_float": (cmd("fields: {a: int}"), cmd("fields: {a: float}"), []),
    "float_to_int": (
        cmd("fields: {a: float}"),
        cmd("fields: {a: int}"),
        ["5:17 FIELD_TYPE_CHANGED"],
    ),
    "t_to_nullable": (cmd("fields: {a: int}"), cmd('fields: {a: "int?"}'), []),
    "nullable_to_required": (
        cmd('fields: {a: "int?"}'),
        cmd("fields: {a: int}"),
        ["5:14 FIELD_NULLABLE_REQUIRED"],
    ),
    "nullable_to_defaulted": (
        cmd('fields: {a: "int?"}'),
        cmd("fields: {a: {type: int, default: 0}}"),
        [],
    ),
    "list_item_retyped": (
        cmd('fields: {a: "list[int]"}'),
        cmd('fields: {a: "list[string]"}'),
        ["5:17 FIELD_TYPE_CHANGED"],
    ),
    "required_added": (
        cmd("fields: {a: int}"),
        cmd("fields: {a: int, b: int}"),
        ["5:22 FIELD_REQUIRED_ADDED"],
    ),
    "optional_added": (
        cmd("fields: {a: int}"),
        cmd('fields: {a: int, b: "int?", c: {type: int, default: 1}}'),
        [],
    ),
    "required_added_with_version_and_previous": (
        cmd("fields: {a: int}"),
        cmd("version: 2\nfields: {a: int, b: int}\nprevious:\n  1: {fields: {a: int}}"),
        [],
    ),
    "version_bump_without_previous": (
        cmd("fields: {a: int}"),
        cmd("version: 2\nfields: {a: int, b: int}"),
        ["4:3 PREVIOUS_REMOVED"],
    ),
    "previous_removed": (
        cmd("version: 2\nfields: {a: int}\nprevious:\n  1: {fields: {a: int}}"),
        cmd("version: 2\nfields: {a: int}"),
        ["8:7 PREVIOUS_REMOVED"],
    ),
    "previous_added": (
        cmd("version: 2\nfields: {a: int}"),
        cmd("version: 2\nfields: {a: int}\nprevious:\n  1: {fields: {a: int}}"),
        [],
    ),
    "previous_retyped": (
        cmd("version: 2\nfields: {a: int}\nprevious:\n  1: {fields: {a: int}}"),
        cmd("version: 2\nfields: {a: int}\nprevious:\n  1: {fields: {a: bool}}"),
        ["8:23 FIELD_TYPE_CHANGED"],
    ),
    "version_lowered": (
        cmd("version: 2\nfields: {a: int}"),
        cmd("fields: {a: int}"),
        ["4:3 VERSION_LOWERED"],
    ),
    "default_removed": (
        cmd("fields: {a: {type: int, default: 1}}"),
        cmd("fields: {a: int}"),
        ["5:14 FIELD_DEFAULT_REMOVED"],
    ),
    "default_changed": (
        cmd("fields: {a: {type: int, default: 1}}"),
        cmd("fields: {a: {type: int, default: 2}}"),
        [],
    ),
    "field_dropped": (cmd("fields: {a: int, b: int}"), cmd("fields: {a: int}"), []),
    "ge_raised": (
        cmd("fields: {a: {type: int, ge: 0}}"),
        cmd("fields: {a: {type: int, ge: 1}}"),
        ["5:14 FIELD_CONSTRAINT_TIGHTENED"],
    ),
    "ge_lowered": (
        cmd("fields: {a: {type: int, ge: 1}}"),
        cmd("fields: {a: {type: int, ge: 0}}"),
        [],
    ),
    "le_added": (
        cmd("fields: {a: int}"),
        cmd("fields: {a: {type: int, le: 9}}"),
        ["5:14 FIELD_CONSTRAINT_TIGHTENED"],
    ),
    "le_removed": (cmd("fields: {a: {type: int, le: 9}}"), cmd("fields: {a: int}"), []),
    "max_length_lowered": (
        cmd("fields: {a: {type: string, max_length: 9}}"),
        cmd("fields: {a: {type: string, max_length: 8}}"),
        ["5:14 FIELD_CONSTRAINT_TIGHTENED"],
    ),
    "min_length_raised": (
        cmd("fields: {a: {type: string, min_length: 1}}"),
        cmd("fields: {a: {type: string, min_length: 2}}"),
        ["5:14 FIELD_CONSTRAINT_TIGHTENED"],
    ),
    "pattern_changed": (
        cmd('fields: {a: {type: string, pattern: "^a"}}'),
        cmd('fields: {a: {type: string, pattern: "^b"}}'),
        ["5:14 FIELD_CONSTRAINT_TIGHTENED"],
    ),
    "pattern_removed": (
        cmd('fields: {a: {type: string, pattern: "^a"}}'),
        cmd("fields: {a: string}"),
        [],
    ),
    "enum_value_removed": (
        types("  P: {enum: [low, high]}\n"),
        types("  P: {enum: [low]}\n"),
        ["4:3 ENUM_VALUE_REMOVED"],
    ),
    "enum_value_added": (types("  P: {enum: [low]}\n"), types("  P: {enum: [low, high]}\n"), []),
    "type_required_field_added": (
        types("  M: {fields: {a: int}}\n"),
        types("  M: {fields: {a: int, b: int}}\n"),
        ["4:24 FIELD_REQUIRED_ADDED"],
    ),
    "result_field_removed": (
        cmd("result: {fields: {ok: bool}}"),
        cmd("result: {fields: {}}"),
        ["5:23 RESULT_FIELD_REMOVED"],
    ),
    "result_field_added": (
        cmd("result: {fields: {ok: bool}}"),
        cmd("result: {fields: {ok: bool, n: int}}"),
        [],
    ),
    "result_field_retyped": (
        cmd("result: {fields: {n: int}}"),
        cmd("result: {fields: {n: string}}"),
        ["5:23 RESULT_FIELD_TYPE_CHANGED"],
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_pair(name: str) -> None:
    old, new, expected = PAIRS[name]
    found = compare(load_sources([("o.yaml", old)]), load_sources([("o.yaml", new)]))
    assert [f"{f.mark.short()} {f.rule}" for f in found] == expected


def test_every_rule_has_a_case() -> None:
    rules = {e.split()[1] for _, _, exp in PAIRS.values() for e in exp}
    src = Path(__file__).resolve().parents[2] / "codegen/cbgen/breaking.py"
    import re

    declared = set(re.findall(r'"([A-Z]+(?:_[A-Z]+)+)"', src.read_text()))
    assert declared - {"TYPE_KIND_CHANGED"} <= rules


def _project(root: Path, text: str) -> None:
    (root / "schemas").mkdir(parents=True, exist_ok=True)
    (root / "schemas" / "orders.yaml").write_text(text)
    (root / "pyproject.toml").write_text("[tool.cbgen]\n")


def test_folder_ref_exit_codes_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tmp_path / "new", cmd("fields: {a: string}"))
    _project(tmp_path / "old", cmd("fields: {a: int}"))
    monkeypatch.chdir(tmp_path / "new")
    r = cbgen("breaking", "--against", str(tmp_path / "old" / "schemas"))
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        "schemas/orders.yaml:5:17: Field `a` of `CreateOrder` changed type from `int` to "
        "`string`: its queued values do not decode"
    ]
    r = cbgen("breaking", "--against", str(tmp_path / "old" / "schemas"), "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)[0] | {"message": ""} == {
        "file": "schemas/orders.yaml",
        "line": 5,
        "col": 17,
        "rule": "FIELD_TYPE_CHANGED",
        "message": "",
    }
    r = cbgen("breaking", "--against", str(tmp_path / "new" / "schemas"))
    assert (r.exit_code, r.stdout) == (0, "")
    r = cbgen("breaking", "--against", str(tmp_path / "missing"))
    assert r.exit_code == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("cbgen: ")
    r = cbgen("breaking")
    assert r.exit_code == 2  # --against is required


def _git(root: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=env)


def test_git_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _git(tmp_path, "init", "-q")
    _project(tmp_path, cmd("fields: {a: int}") + "  Gone: {}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "one")
    _project(tmp_path, cmd("fields: {a: int, b: int}"))
    (tmp_path / "schemas" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "schemas" / "sub")  # any folder inside the repo
    r = cbgen("breaking", str(tmp_path / "schemas"), "--against", "HEAD")
    assert r.exit_code == 1, r.stderr
    marks = [line.split(": ")[0] for line in r.stdout.splitlines()]
    assert [m.removeprefix(str(tmp_path.resolve()) + "/") for m in marks] == [
        "schemas/orders.yaml:5:22",
        "schemas/orders.yaml:6:3",
    ]
    assert "Gone" in r.stdout.splitlines()[1]  # the removal sits on the old line
    r = cbgen("breaking", str(tmp_path / "schemas"), "--against", "HEAD~5")
    assert r.exit_code == 2 and "neither a folder nor a git revision" in r.stderr
