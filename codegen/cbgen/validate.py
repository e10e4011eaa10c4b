"""Schema nodes to checked definitions, with every error found in one pass.

Each problem becomes one `FILE:LINE:COL: message`, worded as msgspec words its own
("Expected `int` >= 1, got `0`") and with a "did you mean" hint where a key or a
type name is close to a known one. Checks that need all files at once (cross-file
references, duplicate domains, cycles by value, defaults that build themselves) run
after every file has been read. Domains may refer to each other's types in a cycle;
only a type that holds itself by value, in one domain or across several, is refused.

The checks live by concern: `per_file`, `resolve`, `values` and `cycles`; this
module runs them in order.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cycles import default_cycles, value_cycles
from .defs import FieldDef, Schema
from .evolution import check_aliases, check_renames
from .keyfields import check_key_fields
from .load import Mark, Node
from .per_file import check_file
from .problems import Problems
from .resolve import Resolver
from .schedules import check_schedules
from .values import check_constraints, check_default

__all__ = ["validate"]


def validate(files: Sequence[tuple[str, str, Node | None]], problems: Problems) -> list[Schema]:
    """Check loaded files: (display name, header name, root node) each."""
    schemas: list[Schema] = []
    for file, source, root in files:
        if root is None:
            continue
        s = check_file(root, file, source, problems)
        if s is not None:
            schemas.append(s)
    r = Resolver(schemas, problems)
    resolved: list[FieldDef] = []
    for s in schemas:
        names: dict[str, Mark] = {}
        for t in s.types:
            names[t.name] = t.mark
        for cmd in s.commands:
            if cmd.name in names:
                problems.add(
                    cmd.mark,
                    f"Command `{cmd.name}` has the name of a type "
                    f"(defined at {names[cmd.name].short()})",
                )
        for f in s.all_fields():
            if r.resolve(s, f.type):
                resolved.append(f)
    for f in resolved:
        check_constraints(f, problems)
    for f in resolved:
        check_default(f, problems)
    ok = {id(f) for f in resolved}
    check_key_fields(schemas, ok, problems)
    check_schedules(schemas, ok, problems)
    for f in (f for s in schemas for f in s.all_fields()):
        if id(f) not in ok:
            f.has_default = False
            f.constraints = {}
    check_aliases(schemas, problems)
    check_renames(schemas, problems)
    value_cycles(schemas, problems)
    default_cycles(schemas, problems)
    return schemas
