"""The section 13 options that name fields or rates, as the generated spec carries them."""

from __future__ import annotations

from cbgen.model import build
from cbgen.pipeline import load_sources

SCHEMA = """cbus: 1
domain: orders
options: {ordering_key: order_id, rate_limit: "100/s"}
types:
  Kind: {enum: [a, b]}
commands:
  Place:
    fields: {order_id: uuid, account: string}
    options: {rate_limit: 5/m, rate_limit_key: account}
  Tag:
    fields: {order_id: Kind}
    options: {ordering_key: order_id, rate_limit: 2/h}
"""


def test_options_carry_the_key_fields_and_rates() -> None:
    (module,) = build(load_sources([("a.yaml", SCHEMA)]), "shop", "msgspec").modules
    assert module.options == (
        "cbus.Options(ordering_key='order_id', rate_limit=cbus.RateLimit(count=100, per_seconds=1))"
    )
    place, tag = module.commands
    assert place.options == (
        "cbus.Options(ordering_key='order_id', "
        "rate_limit=cbus.RateLimit(count=5, per_seconds=60), rate_limit_key='account')"
    )
    assert tag.effective_options["rate_limit"] == "2/h"
    assert tag.options.endswith("rate_limit=cbus.RateLimit(count=2, per_seconds=3600))")


def test_runtime_options_evaluate() -> None:
    import cbus.api

    # Generated code evaluates these as `from cbus import api as cbus` does.
    (module,) = build(load_sources([("a.yaml", SCHEMA)]), "shop", "msgspec").modules
    opts = eval(module.commands[0].options, {"cbus": cbus.api})
    assert opts.rate_limit == cbus.api.RateLimit(count=5, per_seconds=60)
    assert (opts.ordering_key, opts.rate_limit_key) == ("order_id", "account")


def test_the_sender_priority_argument_steps_aside_for_a_priority_field() -> None:
    schema = "cbus: 1\ndomain: orders\ncommands:\n  Ping: {}\n  Rank: {fields: {priority: int}}\n"
    (module,) = build(load_sources([("a.yaml", schema)]), "shop", "msgspec").modules
    assert [c.priority_param for c in module.commands] == ["priority", "cbus_priority"]
