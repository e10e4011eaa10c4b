"""Text made safe in Python source: string literals, comments and docstrings."""

from __future__ import annotations

import re

__all__ = ["comment", "docstring", "pystr"]


def pystr(value: str) -> str:
    """A double-quoted Python literal of any text, escaped as `repr` escapes it.

    `repr` escapes every character a source line cannot hold as it is (`\\r`, other
    control characters, lone surrogates); only the quotes are swapped, so literals
    read alike whatever they contain.
    """
    r = repr(value)
    if r[0] == '"':  # repr chose double quotes: the text has `'` and no `"`
        return r
    return '"' + r[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'


def _visible(char: str) -> str:
    return char if char.isprintable() or char == "\n" else repr(char)[1:-1]


def comment(text: str) -> str:
    """Text safe in a `#` comment: one line, unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_CLOSING = re.compile(r'"(?=""|$)')


def docstring(text: str) -> str:
    """Text safe between triple quotes, lines stripped of trailing blanks.

    Backslashes are doubled and unprintable characters escaped as `repr` would, so
    the docstring's value is the text; a quote is escaped where three would meet or
    where it would run into the closing quotes.
    """
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    text = "".join(_visible(c) for c in text.replace("\\", "\\\\"))
    text = _CLOSING.sub(r'\\"', text)
    if "\n" in text:
        text += "\n"  # the closing quotes on a line of their own
    return text
