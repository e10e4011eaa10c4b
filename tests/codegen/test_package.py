"""The generated package `__init__`: domain modules are imported on first use.

Each probe runs in a fresh interpreter, so `sys.modules` shows what `import PKG` alone
imported; the golden `shop` and the kitchen package (both model styles) are probed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, Generated

PROBE = """\
import sys

def loaded():
    return sorted(m for m in sys.modules if m == "{pkg}" or m.startswith("{pkg}."))

import {pkg}
print(loaded(), "cbus" in sys.modules)
print([n for n in dir({pkg}) if not n.startswith("_")], {pkg}.__all__)
from {pkg} import {first}
print(loaded(), {first}.__name__)
print({pkg}.{second}.DOMAIN.name, loaded())
print({pkg}.{first} is {first}, "{first}" in vars({pkg}))
try:
    {pkg}.nope
except AttributeError as exc:
    print(exc)
try:
    from {pkg} import nope
except ImportError as exc:
    print(exc.args[0])
"""


def _probe(root: Path, pkg: str, first: str, second: str) -> list[str]:
    code = PROBE.format(pkg=pkg, first=first, second=second)
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_import_shop_imports_no_domain_until_used() -> None:
    assert _probe(REPO / "generated", "shop", "orders", "payments") == [
        "['shop'] False",
        "['orders', 'payments'] ['orders', 'payments']",
        "['shop', 'shop.orders'] shop.orders",
        "payments ['shop', 'shop.orders', 'shop.payments']",
        "True True",
        "module 'shop' has no attribute 'nope'",
        "cannot import name 'nope' from 'shop' (" + str(REPO / "generated/shop/__init__.py") + ")",
    ]


def test_lazy_package_in_both_model_styles(generated: Generated) -> None:
    # `kitchen` imports `extra` (a cross-domain reference): importing `extra` first
    # must not pull in `kitchen`.
    pkg = generated.name
    out = _probe(generated.root, pkg, "extra", "kitchen")
    assert out[:4] == [
        f"['{pkg}'] False",
        "['extra', 'kitchen'] ['extra', 'kitchen']",
        f"['{pkg}', '{pkg}.extra'] {pkg}.extra",
        f"kitchen ['{pkg}', '{pkg}.extra', '{pkg}.kitchen']",
    ]


def test_star_import_and_submodule_import() -> None:
    # `payments` refers to `orders.Money`, so it imports `orders` itself.
    code = (
        "import sys, shop.payments\n"
        "print(sorted(m for m in sys.modules if m.startswith('shop')))\n"
        "from shop import *\n"
        "print(orders.DOMAIN.name, payments.DOMAIN.name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "generated")}
    p = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert (p.returncode, p.stdout, p.stderr) == (
        0,
        "['shop', 'shop.orders', 'shop.payments']\norders payments\n",
        "",
    )
