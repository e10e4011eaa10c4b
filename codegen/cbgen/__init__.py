"""cbgen: the code generator of cbus, from YAML schemas to typed Python.

Pipeline (`pipeline`): `load` (YAML to nodes with positions) -> `validate` (every
error at once, into the `defs` model) -> `model` (every Python name decided, by
`naming`) -> `render` (jinja2) -> `output` (ruff format, diff, atomic write).
The cbus runtime never imports this package.
"""

from __future__ import annotations

__all__ = ["MODEL_STYLES", "RUNTIME_API", "RUNTIME_OPTIONS", "SchemaError", "__version__"]

__version__ = "0.1.0"

MODEL_STYLES = ("dataclass", "struct")
"""The model classes cbgen can generate (`models` in [tool.cbgen], `--models`)."""

RUNTIME_API = 3
"""The `cbus.api.API_VERSION` the generated code needs at least."""

RUNTIME_OPTIONS: dict[str, int | float | tuple[float, ...] | dict[str, int] | None] = {
    "max_attempts": 5,
    "backoff": (1.0, 10.0, 60.0),
    "visibility_timeout": 30,
    "timeout": None,
    "unknown_version_grace": 3600,
    "priority": 5,
    "ordering_key": None,
    "rate_limit": None,
    "rate_limit_key": None,
    "retention": {
        "completed": 7 * 86400,
        "failed": 30 * 86400,
        "canceled": 30 * 86400,
        "audit": 30 * 86400,
        "archive": 30 * 86400,
    },
}
"""The defaults of `cbus.api.Options`, for options a schema leaves out; `cbgen docs`
shows them (`retention`: seconds per key, the fields of `cbus.api.Retention`). Kept
equal to the runtime's by a test (cbgen does not import cbus)."""


class SchemaError(Exception):
    """One or more schemas are invalid; `errors` holds each `FILE:LINE:COL: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
