"""What importing cbus and generated code loads: psycopg and msgspec, little of cbus.

The worker, the senders and the operator tools load on first use; a process that
only imports generated code (or `cbus` for its errors) does not pay for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cbus

REPO = Path(__file__).resolve().parents[2]

_LOADED = """
import json, sys
import cbus, shop.orders, shop.payments
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
      ("cbus", "psycopg_pool", "click", "jinja2", "yaml"))))
"""


def test_importing_generated_code_loads_only_the_registry_and_errors_of_cbus() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "generated"))
    out = subprocess.run(
        [sys.executable, "-c", _LOADED], capture_output=True, text=True, env=env, check=True
    )
    # With `cbus.api`, the module generated code imports, and the leaves they need:
    # the version (the API handshake) and the names.
    assert json.loads(out.stdout) == [
        "cbus",
        "cbus.api",
        "cbus.errors",
        "cbus.names",
        "cbus.registry",
        "cbus.version",
    ]


def test_a_submodule_named_like_a_function_does_not_hide_it() -> None:
    script = "import cbus.install, cbus; print(cbus.install.__name__, callable(cbus.install))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["install", "True"]


def test_every_public_name_resolves_on_first_use() -> None:
    for name in cbus.__all__:
        assert getattr(cbus, name) is not None, name
    assert set(cbus.__all__) <= set(dir(cbus))
    assert cbus.Worker.__module__ == "cbus"
    assert cbus.codec.Reply is cbus.Reply


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        cbus.Wroker  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert str(exc) == "module 'cbus' has no attribute 'Wroker'"
    else:
        raise AssertionError("cbus.Wroker resolved")
