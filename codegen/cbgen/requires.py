"""The packages cbgen needs beyond the runtime's, checked before any command runs.

A worker's install carries none of them, so `cbgen` there must say in one line what
to install, not fail with an `ImportError` traceback (as betterproto's plugin does).
"""

from __future__ import annotations

import importlib

__all__ = ["INSTALL", "REQUIRED", "missing"]

REQUIRED = (("jinja2", "jinja2"), ("yaml", "PyYAML"), ("ruff", "ruff"))
"""(import name, distribution name) of each package cbgen imports."""

INSTALL = 'pip install "cbus[codegen]"'


def missing() -> str | None:
    """The distribution name of the first package cbgen cannot import, or None."""
    for module, distribution in REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError:
            return distribution
    return None
