"""The user's project as `[tool.cbgen]` describes it: where the generated package is.

`cbus dev` and the `cbus.testing` plugin install "the project's domains": the
package `cbgen generate` wrote, found through `[tool.cbgen]` in the `pyproject.toml`
of a folder (`out`, default `generated`; `package`, default `commands`). Importing
it registers its domains with `cbus.registry`.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import registry

__all__ = ["Project", "find_project"]


@dataclass(frozen=True)
class Project:
    """Where a project keeps its generated package."""

    root: Path
    out: Path
    package: str

    def import_domains(self) -> list[registry.DomainSpec]:
        """Import the generated package and each of its modules; the domains they declare."""
        for folder in (str(self.root), str(self.out)):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        package = importlib.import_module(self.package)
        names = getattr(package, "__all__", [])
        modules = [importlib.import_module(f"{self.package}.{name}") for name in names]
        found = {
            m.DOMAIN.name: m.DOMAIN
            for m in modules
            if isinstance(getattr(m, "DOMAIN", None), registry.DomainSpec)
        }
        return [found[name] for name in sorted(found)]


def find_project(start: Path) -> Project | None:
    """The `[tool.cbgen]` of `start/pyproject.toml`, or None when it has none.

    A malformed pyproject.toml raises ValueError naming the file.
    """
    path = start / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    tool = data.get("tool", {}).get("cbgen")
    if not isinstance(tool, dict):
        return None
    out = tool.get("out", "generated")
    package = tool.get("package", "commands")
    if not isinstance(out, str) or not isinstance(package, str):
        raise ValueError(f"{path}: [tool.cbgen] `out` and `package` must be strings")
    return Project(root=start, out=(start / out).resolve(), package=package)
