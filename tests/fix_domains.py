"""The domains tests send to: the committed `shop` package, and `testbus` generated now.

`testbus` is generated from tests/schemas at the start of the session with the
`cbgen` command a user runs, so the runtime tests also exercise the generator.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cbus
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def testbus(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    out = tmp_path_factory.mktemp("generated")
    cbgen = Path(sys.executable).with_name("cbgen")
    subprocess.run(
        [
            str(cbgen),
            "generate",
            str(ROOT / "tests" / "schemas"),
            "--out",
            str(out),
            "--package",
            "tbpkg",
        ],
        check=True,
        cwd=ROOT,
    )
    sys.path.insert(0, str(out))
    return importlib.import_module("tbpkg.testbus")


@pytest.fixture(scope="session")
def shop_orders() -> ModuleType:
    return importlib.import_module("shop.orders")


@pytest.fixture(scope="session")
def domains(testbus: ModuleType, shop_orders: ModuleType) -> list[cbus.registry.DomainSpec]:
    """Every domain of the test package and of `shop`, to install in the template."""
    found: list[cbus.registry.DomainSpec] = []
    for package in ("tbpkg", "shop"):
        # Generated packages import their domains lazily: ask for each by name.
        for name in importlib.import_module(package).__all__:
            domain = getattr(importlib.import_module(f"{package}.{name}"), "DOMAIN", None)
            if isinstance(domain, cbus.registry.DomainSpec):
                found.append(domain)
    return found
