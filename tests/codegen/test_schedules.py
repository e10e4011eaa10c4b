"""`schedules:` in a schema file: refused at FILE:LINE:COL when wrong, carried when right.

Each bad case is one schema with one mistake; the whole output is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cbgen.model import build
from cbgen.pipeline import load_sources

from .conftest import cbgen

HEAD = (
    "cbus: 1\ndomain: orders\ntypes:\n  Scope: {enum: [all, some]}\ncommands:\n"
    "  Report:\n    fields:\n      scope: Scope\n"
    "      limit: {type: int, le: 10, default: 1}\n      scheduled_at: datetime\n"
    "  Ping: {fields: {n: int}}\nschedules:\n"
)
# line 13 onwards: the schedules
OK = '{cron: "0 3 * * *", command: Ping, fields: {n: 1}}'

CASES: dict[str, tuple[str, list[str]]] = {
    "bad_name": (
        f"  Night-ly: {OK}\n",
        ["schemas/a.yaml:13:3: Invalid schedule name `Night-ly`: expected ^[a-z][a-z0-9_]*$"],
    ),
    "four_fields": (
        '  a: {cron: "0 3 * *", command: Ping, fields: {n: 1}}\n',
        [
            "schemas/a.yaml:13:13: Invalid cron `0 3 * *`: expected five fields "
            "(minute hour day month weekday), got 4"
        ],
    ),
    "six_fields": (
        '  a: {cron: "0 0 3 * * *", command: Ping, fields: {n: 1}}\n',
        [
            "schemas/a.yaml:13:13: Invalid cron `0 0 3 * * *`: expected five fields "
            "(minute hour day month weekday), got 6"
        ],
    ),
    "bad_minute": (
        '  a: {cron: "61 3 * * *", command: Ping, fields: {n: 1}}\n',
        ["schemas/a.yaml:13:13: Invalid cron `61 3 * * *`: bad minute"],
    ),
    "impossible_day": (
        '  a: {cron: "0 3 31 2 *", command: Ping, fields: {n: 1}}\n',
        ["schemas/a.yaml:13:13: Invalid cron `0 3 31 2 *`: bad day-of-month"],
    ),
    "unknown_timezone": (
        '  a: {cron: "0 3 * * *", timezone: Europe/Pariss, command: Ping, fields: {n: 1}}\n',
        [
            "schemas/a.yaml:13:36: Unknown timezone `Europe/Pariss`: expected an IANA name "
            "such as `Europe/Paris` (did you mean `Europe/Paris`?)"
        ],
    ),
    "unknown_command": (
        '  a: {cron: "0 3 * * *", command: Pingg, fields: {n: 1}}\n',
        [
            "schemas/a.yaml:13:35: Unknown command `Pingg` in schedule `a`: expected a command "
            "of domain `orders` (did you mean `Ping`?)"
        ],
    ),
    "unknown_field": (
        '  a: {cron: "0 3 * * *", command: Ping, fields: {n: 1, nn: 2}}\n',
        ["schemas/a.yaml:13:56: Unknown field `nn` of `Ping` in schedule `a` (did you mean `n`?)"],
    ),
    "missing_required_field": (
        '  a: {cron: "0 3 * * *", command: Ping}\n',
        ["schemas/a.yaml:13:3: Schedule `a` misses required fields of `Ping`: `n`"],
    ),
    "wrong_type": (
        '  a: {cron: "0 3 * * *", command: Ping, fields: {n: x}}\n',
        ["schemas/a.yaml:13:53: Invalid value for `n` in schedule `a`: Expected `int`, got `str`"],
    ),
    "breaks_constraint": (
        '  a: {cron: "0 3 * * *", command: Report, fields: {scope: all, limit: 11}}\n',
        [
            "schemas/a.yaml:13:71: Invalid value for `limit` in schedule `a`: "
            "Expected `int` <= 10, got `11`"
        ],
    ),
    "bad_enum": (
        '  a: {cron: "0 3 * * *", command: Report, fields: {scope: none}}\n',
        [
            "schemas/a.yaml:13:59: Invalid value for `scope` in schedule `a`: "
            "Expected one of `all` or `some`, got `none`"
        ],
    ),
    "scheduled_at_given": (
        '  a: {cron: "0 3 * * *", command: Report, fields: {scope: all, scheduled_at: x}}\n',
        [
            "schemas/a.yaml:13:64: `scheduled_at` is filled in at firing time: leave it out "
            "of schedule `a`"
        ],
    ),
    "negative_catch_up": (
        '  a: {cron: "0 3 * * *", command: Ping, catch_up: -1, fields: {n: 1}}\n',
        ["schemas/a.yaml:13:51: Expected `int` >= 0 for `catch_up`, got `-1`"],
    ),
    "missing_cron": (
        "  a: {command: Ping, fields: {n: 1}}\n",
        ["schemas/a.yaml:13:6: Missing required key `cron` in schedule `a`"],
    ),
    "unknown_key": (
        '  a: {cron: "0 3 * * *", command: Ping, fields: {n: 1}, every: 3}\n',
        [
            "schemas/a.yaml:13:57: Unknown key `every` (expected one of `cron`, `timezone`, "
            "`command`, `fields` or `catch_up`)"
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_schedule(project: Path, case: str) -> None:
    text, expected = CASES[case]
    (project / "schemas" / "a.yaml").write_text(HEAD + text)
    r = cbgen("generate")
    n = len(expected)
    summary = f"{n} error{'s' if n != 1 else ''}; nothing written"
    assert (r.exit_code, r.stderr) == (1, "\n".join([*expected, summary]) + "\n")
    assert not (project / "generated").exists()


def test_scheduled_at_must_be_a_datetime(project: Path) -> None:
    text = HEAD.replace("scheduled_at: datetime", "scheduled_at: date")
    (project / "schemas" / "a.yaml").write_text(
        text + '  a: {cron: "0 3 * * *", command: Report, fields: {scope: all}}\n'
    )
    r = cbgen("generate")
    assert r.stderr.splitlines() == [
        "schemas/a.yaml:13:35: Field `scheduled_at` of `Report` is `date`: a schedule fills "
        "it with its firing time, so it must be a `datetime`",
        "1 error; nothing written",
    ]


def test_schedules_are_carried_in_the_domain_spec() -> None:
    text = HEAD.replace("Ping: {fields: {n: int}}", "Ping: {fields: {n: int, on: date?}}")
    text += (
        '  nightly: {cron: "0  3 * * *", command: Report, fields: {scope: all}}\n'
        '  hourly: {cron: "0 * * * *", timezone: Europe/Paris, command: Ping,\n'
        "           fields: {n: 3, on: 2026-01-02}, catch_up: 0}\n"
    )
    (module,) = build(load_sources([("a.yaml", text)]), "shop", "msgspec").modules
    assert module.schedules == [
        "cbus.ScheduleSpec(name='nightly', cron='0 3 * * *', timezone='UTC', "
        "command='orders.Report', fields={'scope': 'all'}, catch_up=1)".replace("'", '"'),
        "cbus.ScheduleSpec(name='hourly', cron='0 * * * *', "
        "timezone='Europe/Paris', command='orders.Ping', fields={'n': 3, 'on': '2026-01-02'}, "
        "catch_up=0)".replace("'", '"'),
    ]


def test_generated_module_registers_its_schedules(project: Path) -> None:
    import importlib
    import sys

    (project / "schemas" / "a.yaml").write_text(
        HEAD + '  nightly: {cron: "0 3 * * *", command: Report, fields: {scope: some}}\n'
    )
    r = cbgen("generate", "--package", "schedpkg")
    assert r.exit_code == 0, r.stderr
    sys.path.insert(0, str(project / "generated"))
    try:
        mod = importlib.import_module("schedpkg.orders")
    finally:
        sys.path.remove(str(project / "generated"))
    (spec,) = mod.DOMAIN.schedules
    assert (spec.name, spec.cron, spec.timezone, spec.command) == (
        "nightly",
        "0 3 * * *",
        "UTC",
        "orders.Report",
    )
    assert (dict(spec.fields), spec.catch_up) == ({"scope": "some"}, 1)
