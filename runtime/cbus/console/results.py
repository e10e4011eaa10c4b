"""How the console reads and checks the result an operator gives to `complete`.

A result is checked exactly as `cbus tsq complete` checks it, by `cbus.complete`
itself (one function, `cbus._command_types.check_result`): against the command's
generated result class when its package is imported in this process (`cbus console
--domains PACKAGE`), else against the JSON schema install recorded in
`cbus.command_type`, without application code.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ValidationError
from ..registry import spec_for_kind

__all__ = ["parse_result", "result_checked_against"]


def parse_result(text: str) -> Any:
    """The operator's result as JSON data; empty text is no result (null)."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"The result is not valid JSON: {exc}") from None


def result_checked_against(kind: str) -> str:
    """What a result for `kind` is checked against (by `cbus.complete`), for the form."""
    spec = spec_for_kind(kind)
    if spec is None:
        return "the result schema recorded at install"
    if spec.result_type is None:
        return "no result (the command declares none)"
    return str(spec.result_type.__name__)
