"""The schema-evolution keys of a command: `previous` versions and `aliases`.

`previous` maps an earlier version number to that version's fields, checked like
the current fields (the resolver and value checks see them through
`Schema.all_fields`). `aliases` lists earlier kinds of the command, `<domain>.<Name>`
in the command's own domain: a rename keeps the queue, a move to another domain
would not (its messages sit in the other domain's queue), so cross-domain aliases
are refused.
"""

from __future__ import annotations

import itertools

from .checking import FileChecker
from .defs import DOMAIN_RE, NAME_RE, PREVIOUS_KEYS, CommandDef, PreviousDef, Schema
from .load import Map, Mark, Scalar, Seq
from .problems import Problems, kind_of

__all__ = ["check_aliases", "check_evolution", "check_renames"]


def check_evolution(c: FileChecker, m: Map, cmd: CommandDef, domain: str) -> None:
    """Fill `cmd.previous` and `cmd.aliases` from the command's mapping `m`."""
    pnode = m.get("previous")
    pm = c.mapping(pnode, f"`previous` of `{cmd.name}`") if pnode is not None else None
    if pm is not None:
        for key, value in pm.items:
            number = int(key.text) if key.text.isdigit() else 0
            if number < 1:
                c.err(key.mark, f"Expected a version number >= 1 in `previous`, got `{key.text}`")
                continue
            if number >= cmd.version:
                c.err(
                    key.mark,
                    f"Previous version {number} of `{cmd.name}` must be below "
                    f"its `version` ({cmd.version})",
                )
                continue
            if any(p.version == number for p in cmd.previous):
                c.err(key.mark, f"Previous version {number} of `{cmd.name}` is given twice")
                continue
            if isinstance(value, Scalar) and value.value is None:
                prev = PreviousDef(number, key.mark)
            else:
                vm = c.mapping(value, f"version {number} of `{cmd.name}`")
                if vm is None:
                    continue
                c.keys(vm, PREVIOUS_KEYS)
                prev = PreviousDef(number, key.mark, description=c.description(vm))
                owner = f"{cmd.name}V{number}"
                prev.fields = c.fields(vm.get("fields"), owner, command=True)
            cmd.previous.append(prev)
        cmd.previous.sort(key=lambda p: p.version)
    anode = m.get("aliases")
    if anode is None:
        return
    if not isinstance(anode, Seq):
        c.err(anode.mark, f"Expected `list` of kinds for `aliases`, got `{kind_of(anode)}`")
        return
    for item in anode.items:
        kind = c.text(item, "an alias")
        if kind is None:
            continue
        dom, _, name = kind.partition(".")
        if not (DOMAIN_RE.match(dom) and NAME_RE.match(name)):
            c.err(item.mark, f"Invalid alias `{kind}`: expected `<domain>.<Name>`")
        elif domain and dom != domain:
            c.err(
                item.mark,
                f"Alias `{kind}` is in another domain: an alias names an earlier kind "
                f"of this domain (`{domain}.{name}`)",
            )
        elif name == cmd.name:
            c.err(item.mark, f"Alias `{kind}` is the command itself")
        else:
            cmd.aliases.append((kind, item.mark))


def check_aliases(schemas: list[Schema], problems: Problems) -> None:
    """Every kind (command or alias) names one command only."""
    seen: dict[str, Mark] = {}
    for s in schemas:
        for cmd in s.commands:
            seen.setdefault(f"{s.domain}.{cmd.name}", cmd.mark)
    for s in schemas:
        for cmd in s.commands:
            for kind, mark in cmd.aliases:
                if kind in seen:
                    problems.add(
                        mark,
                        f"Alias `{kind}` is already a command or alias "
                        f"(defined at {seen[kind].file}:{seen[kind].short()})",
                    )
                else:
                    seen[kind] = mark


def check_renames(schemas: list[Schema], problems: Problems) -> None:
    """`renamed_from` names a field of the version just before, which must exist."""
    for s in schemas:
        allowed: set[int] = set()
        for cmd in s.commands:
            chain: list[PreviousDef | CommandDef] = [*cmd.previous, cmd]
            for before, after in itertools.pairwise(chain):
                names = {f.name for f in before.fields}
                for f in after.fields:
                    allowed.add(id(f))
                    if f.renamed_from and f.renamed_from not in names:
                        problems.add(
                            f.mark,
                            f"`renamed_from: {f.renamed_from}` of field `{f.name}`: version "
                            f"{before.version} of `{cmd.name}` has no field `{f.renamed_from}`",
                        )
        for f in s.all_fields():
            if f.renamed_from and id(f) not in allowed:
                problems.add(
                    f.mark,
                    f"`renamed_from` of field `{f.name}` needs the version before it "
                    "under the command's `previous`",
                )
