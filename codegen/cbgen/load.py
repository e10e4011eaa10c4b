"""YAML text to nodes that remember where they came from.

PyYAML's `compose` gives a node tree in which every value has a mark; this module
turns it into `Map`, `Seq` and `Scalar` nodes carrying `FILE:LINE:COL`, reports
duplicate keys (PyYAML's loaders silently keep the last one) and turns YAML errors
into messages with a position. Nothing here knows the schema language.

Aliases and explicit tags are refused: an alias can make a small file expand to
gigabytes ("billion laughs"), and a schema has no use for either. The builder
stops at the first node it meets twice, so that refusal takes linear time.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

__all__ = ["Map", "Mark", "Node", "Scalar", "Seq", "load_file", "load_text", "one_line"]


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in a schema file; line and column are 1-based."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def short(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass(slots=True)
class Scalar:
    """A YAML scalar: `value` as YAML resolves it, `text` as written."""

    value: Any
    text: str
    mark: Mark
    quoted: bool = False


@dataclass(slots=True)
class Seq:
    items: list[Node]
    mark: Mark


@dataclass(slots=True)
class Map:
    """A YAML mapping; keys are kept as written, in order, duplicates removed."""

    items: list[tuple[Scalar, Node]]
    mark: Mark
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {k.text: i for i, (k, _) in enumerate(self.items)}

    def get(self, key: str) -> Node | None:
        i = self._index.get(key)
        return None if i is None else self.items[i][1]

    def key(self, key: str) -> Scalar | None:
        i = self._index.get(key)
        return None if i is None else self.items[i][0]

    def keys(self) -> list[str]:
        return [k.text for k, _ in self.items]


Node = Map | Seq | Scalar

_MAX_DEPTH = 64


_YAML_TAG = "tag:yaml.org,2002:"
_MAP_TAG = _YAML_TAG + "map"
_SEQ_TAG = _YAML_TAG + "seq"
_BREAKS = {"\n": "\\n", "\r": "\\r"}


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == "\t" else _BREAKS.get(ch) or ascii(ch)[1:-1] for ch in text
    )


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


class _Constructor(SafeConstructor):
    """Resolves single scalars only; mappings and sequences are walked by `_Builder`."""


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[tuple[Mark, str]] = []
        self.aliased = False
        self._seen: set[int] = set()
        self._constructor = _Constructor()
        self._resolver = yaml.resolver.Resolver()

    def mark(self, node: yaml.Node) -> Mark:
        m = node.start_mark
        return Mark(self.file, m.line + 1, m.column + 1)

    def build(self, node: yaml.Node, depth: int = 0) -> Node:
        mark = self.mark(node)
        if id(node) in self._seen:
            # An alias: the composer shares the anchored node. Not expanded, ever.
            self.aliased = True
            return Scalar(None, "", mark)
        self._seen.add(id(node))
        if depth > _MAX_DEPTH:
            self.errors.append((mark, f"Nesting deeper than {_MAX_DEPTH} levels"))
            return Scalar(None, "", mark)
        tag, implied = self._tags(node)
        if tag != implied:
            # Refused, then read as if untagged, so that no other error follows from it.
            shown = _shown_tag(tag)
            self.errors.append((mark, f"Unsupported YAML tag `{shown}`: write the value untagged"))
            node.tag = implied
        if isinstance(node, yaml.MappingNode):
            return self._map(node, mark, depth)
        if isinstance(node, yaml.SequenceNode):
            return Seq([self.build(n, depth + 1) for n in node.value], mark)
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, mark)

    def _tags(self, node: yaml.Node) -> tuple[str, str]:
        """The tag of `node` and the one YAML infers for it; they differ when one is written."""
        if isinstance(node, yaml.ScalarNode):
            plain = not node.style  # None (PyYAML) or "" (libyaml)
            resolve: Any = self._resolver.resolve  # untyped in types-PyYAML
            implied = str(resolve(yaml.ScalarNode, node.value, (plain, not plain)))
        else:
            implied = _SEQ_TAG if isinstance(node, yaml.SequenceNode) else _MAP_TAG
        return str(node.tag), implied

    def _scalar(self, node: yaml.ScalarNode, mark: Mark) -> Scalar:
        text = str(node.value)
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError, OverflowError) as exc:
            problem = exc.problem if isinstance(exc, ConstructorError) else str(exc)
            self.errors.append((mark, f"Invalid scalar `{text}`: {problem}"))
            value = text
        if isinstance(value, datetime.datetime | datetime.date):
            # Dates stay text: the schema decides what a value means, not YAML 1.1.
            value = text
        return Scalar(value, text, mark, quoted=node.style in ("'", '"'))

    def _map(self, node: yaml.MappingNode, mark: Mark, depth: int) -> Map:
        items: list[tuple[Scalar, Node]] = []
        seen: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            key_mark = self.mark(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.errors.append((key_mark, "Expected a plain key, got a collection"))
                continue
            key = Scalar(str(key_node.value), str(key_node.value), key_mark)
            if key.text in seen:
                first = seen[key.text].short()
                self.errors.append(
                    (key_mark, f"Duplicate key `{key.text}` (first defined at {first})")
                )
                continue
            seen[key.text] = key_mark
            items.append((key, self.build(value_node, depth + 1)))
        return Map(items, mark)


# libyaml parses about ten times faster; on a syntax error the pure-Python parser
# runs again, so that messages do not depend on whether libyaml is installed.
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _compose(text: str) -> yaml.Node | None:
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _first_alias(text: str, file: str) -> tuple[Mark, str]:
    """The error for the first alias of `text` (which composed without error)."""
    for e in yaml.parse(text, Loader=_FAST_LOADER or yaml.SafeLoader):
        if isinstance(e, yaml.AliasEvent) and e.start_mark is not None:
            where = Mark(file, e.start_mark.line + 1, e.start_mark.column + 1)
            return where, f"YAML aliases are not supported: write out the value of `*{e.anchor}`"
    raise AssertionError("a shared node without an alias")  # pragma: no cover


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of `text[index]`, counting line breaks as YAML does."""
    line, col = 1, 1
    for i, ch in enumerate(text[:index]):
        if ch in "\n\x85\u2028\u2029" or (ch == "\r" and text[i + 1 : i + 2] != "\n"):
            line, col = line + 1, 1
        elif ch != "\ufeff" or i > 0:
            col += 1
    return line, col


def _problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or exc.context or "syntax error"
    if exc.context and problem.startswith("but "):
        # "expected a single document in the stream, but found another document"
        problem = f"{exc.context}, {problem}"
    elif exc.context and exc.context_mark is not None and problem == "second occurrence":
        # "found duplicate anchor 'a'; first occurrence"
        m = exc.context_mark
        problem = f"{exc.context} at {m.line + 1}:{m.column + 1}, {problem} here"
    return one_line(problem)


def load_text(text: str, file: str) -> tuple[Node | None, list[tuple[Mark, str]]]:
    """Parse one YAML document; returns the node (None on syntax errors) and errors."""
    start = Mark(file, 1, 1)
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        where = Mark(file, m.line + 1, m.column + 1) if m is not None else start
        return None, [(where, f"Invalid YAML: {_problem(exc)}")]
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow, such as NUL: at its place, not at 1:1.
        where = Mark(file, *_position(text, exc.position))
        return None, [(where, f"Invalid YAML: {one_line(str(exc).splitlines()[0])}")]
    except yaml.YAMLError as exc:
        return None, [(start, f"Invalid YAML: {one_line(' '.join(str(exc).split()))}")]
    except RecursionError:
        return None, [(start, "Invalid YAML: nesting too deep")]
    if root is None:
        return None, [(start, "Empty schema: expected a mapping with `cbus: 1`")]
    builder = _Builder(file)
    try:
        node = builder.build(root)
    except RecursionError:
        return None, [(start, "Invalid YAML: nesting too deep")]
    if builder.aliased:
        return None, [_first_alias(text, file)]
    return node, builder.errors


def load_file(path: Path, display: str) -> tuple[Node | None, list[tuple[Mark, str]]]:
    """Read and parse a schema file; `display` is the name used in messages."""
    start = Mark(display, 1, 1)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [(start, f"Cannot read schema: {exc.strerror}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
        where = Mark(display, before.count(b"\n") + 1, col)
        return None, [(where, f"Invalid UTF-8: unexpected byte 0x{data[exc.start]:02x}")]
    return load_text(text, display)
