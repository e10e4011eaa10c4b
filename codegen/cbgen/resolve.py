"""The resolver: each named type to its definition, in its own file or another's."""

from __future__ import annotations

from .defs import SCALARS, Schema, TypeDef, TypeRef
from .problems import Problems, hint
from .typeexpr import walk

__all__ = ["Resolver"]


class Resolver:
    def __init__(self, schemas: list[Schema], p: Problems) -> None:
        self.p = p
        self.schemas = schemas
        self.by_domain: dict[str, Schema] = {}
        for s in schemas:
            if not s.domain:
                continue
            first = self.by_domain.get(s.domain)
            if first is not None:
                p.add(s.mark, f"Duplicate domain `{s.domain}` (first defined at {first.mark})")
                continue
            self.by_domain[s.domain] = s

    def types_of(self, domain: str) -> dict[str, TypeDef]:
        s = self.by_domain.get(domain)
        return {t.name: t for t in s.types} if s is not None else {}

    def resolve(self, schema: Schema, ref: TypeRef) -> bool:
        ok = True
        for r in walk(ref):
            if r.kind != "named":
                continue
            assert r.mark is not None
            if "." in r.name:
                dom, _, tname = r.name.partition(".")
                other = self.by_domain.get(dom)
                if other is None:
                    # No close name: most likely its schema was left off the command line.
                    h = hint(dom, self.by_domain) or (
                        f" (pass the schema file that defines `{dom}`, or its folder, too)"
                    )
                    self.p.add(r.mark, f"Unknown domain `{dom}` in type `{r.name}`{h}")
                    ok = False
                    continue
                t = self.types_of(dom).get(tname)
                if t is None:
                    h = hint(r.name, [f"{dom}.{n}" for n in self.types_of(dom)])
                    self.p.add(r.mark, f"Unknown type `{r.name}`{h}")
                    ok = False
                    continue
                r.domain, r.target = dom, t
                if dom != schema.domain:
                    schema.imports.setdefault(dom, r.mark)
            else:
                local = {t.name: t for t in schema.types}
                t = local.get(r.name)
                if t is None:
                    others = [
                        f"{d}.{n}"
                        for d in self.by_domain
                        for n in self.types_of(d)
                        if d != schema.domain
                    ]
                    h = hint(r.name, [*SCALARS, *local, *others])
                    self.p.add(r.mark, f"Unknown type `{r.name}`{h}")
                    ok = False
                    continue
                r.domain, r.target = schema.domain, t
        return ok
