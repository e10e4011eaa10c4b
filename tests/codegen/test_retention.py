"""The `retention` option (contract section 9), as the generated spec carries it."""

from __future__ import annotations

import cbus.api
from cbgen.docs import duration
from cbgen.model import build
from cbgen.pipeline import load_sources

SCHEMA = """cbus: 1
domain: orders
options:
  retention: {completed: 12h, failed: 3600, audit: 90s}
commands:
  Place:
    fields: {order_id: uuid}
    options: {retention: {completed: 2d, archive: 5m}}
  Tag: {}
"""

DEFAULTS = {
    "completed": 7 * 86400,
    "failed": 30 * 86400,
    "canceled": 30 * 86400,
    "audit": 30 * 86400,
    "archive": 30 * 86400,
}


def test_command_retention_overrides_the_domain_key_by_key() -> None:
    (module,) = build(load_sources([("a.yaml", SCHEMA)]), "shop", "msgspec").modules
    assert (
        module.options
        == "cbus.Options(retention=cbus.Retention(completed=43200, failed=3600, audit=90))"
    )
    place, tag = module.commands
    assert place.options == (
        "cbus.Options(retention=cbus.Retention(completed=172800, failed=3600, audit=90, "
        "archive=300))"
    )
    assert tag.options == module.options
    assert place.effective_options["retention"] == {
        **DEFAULTS,
        "completed": 172800,
        "failed": 3600,
        "audit": 90,
        "archive": 300,
    }


def test_without_retention_the_defaults_apply() -> None:
    schema = "cbus: 1\ndomain: orders\ncommands:\n  Ping: {}\n"
    (module,) = build(load_sources([("a.yaml", schema)]), "shop", "msgspec").modules
    assert module.options == "cbus.Options()"
    assert module.commands[0].effective_options["retention"] == DEFAULTS
    assert cbus.api.Options().retention == cbus.api.Retention(**DEFAULTS)


def test_generated_retention_evaluates() -> None:
    (module,) = build(load_sources([("a.yaml", SCHEMA)]), "shop", "msgspec").modules
    opts = eval(module.commands[0].options, {"cbus": cbus.api})
    assert opts.retention == cbus.api.Retention(
        completed=172800, failed=3600, canceled=30 * 86400, audit=90, archive=300
    )


def test_durations_read_back_in_their_largest_unit() -> None:
    assert [duration(s) for s in (90, 120, 43200, 604800)] == ["90s", "2m", "12h", "7d"]


def test_the_reference_shows_retention_that_differs_from_the_defaults() -> None:
    from cbgen.docs import options

    (module,) = build(load_sources([("a.yaml", SCHEMA)]), "shop", "msgspec").modules
    text = options(module.commands[0].effective_options)
    assert text.endswith(
        "`retention: {completed: 2d, failed: 1h, canceled: 30d, audit: 90s, archive: 5m}`"
    )
    assert "retention" not in options(
        build(
            load_sources(
                [
                    (
                        "a.yaml",
                        SCHEMA.replace(
                            "  retention: {completed: 12h, failed: 3600, audit: 90s}\n",
                            "  max_attempts: 2\n",
                        ).replace("    options: {retention: {completed: 2d, archive: 5m}}\n", ""),
                    )
                ]
            ),
            "shop",
            "msgspec",
        )
        .modules[0]
        .effective_options
    )
