"""Each command's JSON schemas in the database, for tools that lack the application's code.

`install_domain` records, per command version, in `cbus.command_type`, the JSON Schema
msgspec derives from its payload class and from its result class (SQL NULL: it
declares no result). `cbus tsq complete` (and a console) check an operator's result
against it without importing the generated package.

The check is the `jsonschema` library's (Draft 2020-12, the dialect msgspec writes),
not a type rebuilt from the schema: msgspec's schemas carry every constraint cbgen
emits (lengths, bounds, patterns, enums, nullables, nested `$defs`), and rebuilding
classes from them would be a second, private schema compiler to keep in step.
The format `decimal` (msgspec's, for Decimal written as a string) is checked too.
"""

from __future__ import annotations

import decimal
import importlib
from typing import Any

import msgspec

from . import codec
from .errors import ValidationError
from .pgmq import RawJson
from .registry import DomainSpec

__all__ = ["check_result", "schema_rows"]


def schema_rows(domain: DomainSpec) -> list[dict[str, Any]]:
    """The rows of `cbus.command_type` for every kind and version the domain's workers run.

    A command's kind at its current version; then each earlier version it keeps
    (`previous`), and each of these under every alias kind (a rename), since a
    message of those runs as this command: the payload schema is that version's,
    the result schema the command's own (the handler returns the current result).
    """
    own = {c.kind for c in domain.commands}
    rows = []
    for spec in domain.commands:
        result = (
            None
            if spec.result_type is None
            else RawJson(codec.encode(msgspec.json.schema(spec.result_type)))
        )
        versions = [(spec.version, spec.type), *((p.version, p.type) for p in spec.previous)]
        kinds = [spec.kind, *(a for a in spec.aliases if a not in own)]
        rows += [
            {
                "kind": kind,
                "version": version,
                "domain": domain.name,
                "payload_schema": RawJson(codec.encode(msgspec.json.schema(type_))),
                "result_schema": result,
            }
            for kind in kinds
            for version, type_ in versions
        ]
    return rows


def _is_decimal(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        return decimal.Decimal(value).is_finite()
    except decimal.InvalidOperation:
        return False


def check_result(kind: str, version: int, schema: Any, value: Any) -> None:
    """Raise `cbus.ValidationError` unless `value` fits the recorded result schema.

    `schema` None: the command declares no result, so only null fits.
    """
    if value is None:
        return
    if schema is None:
        raise ValidationError(f"`{kind}` declares no result: complete it without one")
    # Imported here: only operators' tools pay for it (250 ms). By name, so that a
    # mypy run over code built on cbus needs no jsonschema stubs.
    jsonschema = importlib.import_module("jsonschema")

    if isinstance(schema, bytes | str):
        schema = msgspec.json.decode(schema)
    checker = jsonschema.FormatChecker()
    checker.checks("decimal")(_is_decimal)
    validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise ValidationError(
        f"Invalid result for `{kind}` (version {version}, as installed): {error.message}"
        f" - at `{path}`"
    )
