"""CloudWatch Logs filter patterns (subscription and metric filters), as AWS documents them.

The local runtime uses this to decide which lines of a function's output a subscription filter
delivers. Supported: the empty pattern (every event); term patterns (``ERROR``, ``"exact phrase"``,
several terms = all of them, ``-term`` = not it, ``?a ?b`` = any of them); JSON patterns
``{ SELECTOR OP VALUE }`` with selectors like ``$.a.b[0]``, ``=``/``!=`` on strings (quoted or
bare, ``*`` as a wildcard) and numbers, ``<``, ``<=``, ``>``, ``>=`` on numbers, ``IS NULL``,
``IS TRUE``, ``IS FALSE``, ``NOT EXISTS``, combined with ``&&``, ``||`` (``&&`` binds tighter) and
parentheses. Not supported, and refused with ``UnsupportedPatternError`` so the runtime can warn
rather than silently deliver the wrong lines: space-delimited patterns (``[ip, user, ...]``),
regular expressions (``%...%``), ``$.*`` wildcard selectors and ``IN`` lists.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[str], bool]

_MISSING = object()
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lp>\() | (?P<rp>\)) | (?P<and>&&) | (?P<or>\|\|)
      | (?P<op>!=|<=|>=|=|<|>)
      | (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<sel>\$[^\s=!<>()&|]*)
      | (?P<word>[^\s=!<>()&|"]+)
    )""",
    re.VERBOSE,
)
_PATH_PART = re.compile(r"\.([A-Za-z0-9_\-@:]+)|\[(\d+)\]")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class UnsupportedPatternError(ValueError):
    """A filter pattern whose syntax this emulation does not implement (or that is invalid)."""


def compile_pattern(pattern: str) -> Matcher:
    """A function telling whether one log event's message matches ``pattern``."""
    text = pattern.strip()
    if not text:
        return lambda message: True
    if text.startswith("{"):
        if not text.endswith("}"):
            raise UnsupportedPatternError(f"JSON pattern without its closing brace: {pattern!r}")
        test = _JsonParser(text[1:-1]).parse()
        return lambda message: _json_match(test, message)
    if text.startswith("["):
        raise UnsupportedPatternError(f"space-delimited patterns are not emulated: {pattern!r}")
    if "%" in text:
        raise UnsupportedPatternError(f"regular-expression patterns are not emulated: {pattern!r}")
    return _terms(text)


# ---------------------------------------------------------------- term patterns
def _terms(text: str) -> Matcher:
    words = re.findall(r'[-?]?"(?:[^"\\]|\\.)*"|\S+', text)
    required: list[str] = []
    excluded: list[str] = []
    optional: list[str] = []
    for w in words:
        sign = w[0] if w[0] in "-?" else ""
        body = w[len(sign) :]
        if body.startswith('"'):
            body = json.loads(body)
        {"": required, "-": excluded, "?": optional}[sign].append(body)
    if optional and (required or excluded):
        raise UnsupportedPatternError(f"'?' terms mixed with other terms are not emulated: {text!r}")

    def match(message: str) -> bool:
        if optional:
            return any(t in message for t in optional)
        return all(t in message for t in required) and not any(t in message for t in excluded)

    return match


# ---------------------------------------------------------------- JSON patterns
Test = Callable[[Any], bool]


def _json_match(test: Test, message: str) -> bool:
    line = message.strip()
    if not line.startswith("{"):
        return False  # JSON patterns only ever match JSON log events
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and test(doc)


def _select(doc: Any, path: list[str | int]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
            doc = doc[part]
        else:
            if not isinstance(doc, dict) or part not in doc:
                return _MISSING
            doc = doc[part]
    return doc


def _parse_selector(sel: str) -> list[str | int]:
    if not sel.startswith("$") or "*" in sel:
        raise UnsupportedPatternError(f"selector {sel!r} is not emulated (use $.field.sub[0])")
    path: list[str | int] = []
    pos = 1
    while pos < len(sel):
        m = _PATH_PART.match(sel, pos)
        if m is None:
            raise UnsupportedPatternError(f"cannot read the selector {sel!r}")
        path.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not path:
        raise UnsupportedPatternError("a selector must name a field ($.field)")
    return path


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _comparison(path: list[str | int], op: str, kind: str, raw: str) -> Test:
    if kind == "word" and _NUMBER.match(raw):
        number = float(raw)
        compare = {
            "=": lambda v: v == number,
            "!=": lambda v: v != number,
            "<": lambda v: v < number,
            "<=": lambda v: v <= number,
            ">": lambda v: v > number,
            ">=": lambda v: v >= number,
        }[op]
        return lambda doc: _is_number(v := _select(doc, path)) and compare(v)
    if op not in ("=", "!="):
        raise UnsupportedPatternError(f"{op} needs a number, got {raw!r}")
    value = json.loads(raw) if kind == "str" else raw
    if "*" in value:
        equal: Callable[[str], bool] = lambda v: fnmatch.fnmatchcase(v, value)  # noqa: E731
    else:
        equal = lambda v: v == value  # noqa: E731
    if op == "=":
        return lambda doc: isinstance(v := _select(doc, path), str) and equal(v)
    return lambda doc: isinstance(v := _select(doc, path), str) and not equal(v)


class _JsonParser:
    """Recursive descent over ``expr := and ('||' and)*; and := term ('&&' term)*``."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise UnsupportedPatternError(f"cannot read the JSON pattern at {text[pos:]!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _next(self, *kinds: str) -> tuple[str, str]:
        tok = self._peek()
        if tok is None or (kinds and tok[0] not in kinds):
            raise UnsupportedPatternError(f"JSON pattern: expected {' or '.join(kinds)}, got {tok}")
        self.i += 1
        return tok

    def parse(self) -> Test:
        test = self._or()
        if self._peek() is not None:
            raise UnsupportedPatternError(f"JSON pattern: unexpected {self._peek()}")
        return test

    def _or(self) -> Test:
        parts = [self._and()]
        while (tok := self._peek()) is not None and tok[0] == "or":
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda doc: any(p(doc) for p in parts))

    def _and(self) -> Test:
        parts = [self._term()]
        while (tok := self._peek()) is not None and tok[0] == "and":
            self.i += 1
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else (lambda doc: all(p(doc) for p in parts))

    def _term(self) -> Test:
        tok = self._peek()
        if tok is not None and tok[0] == "lp":
            self.i += 1
            inner = self._or()
            self._next("rp")
            return inner
        path = _parse_selector(self._next("sel")[1])
        kind, text = self._next("op", "word")
        if kind == "op":
            vkind, raw = self._next("str", "word")
            return _comparison(path, text, vkind, raw)
        keyword = text.upper()
        if keyword == "IS":
            what = self._next("word")[1].upper()
            if what == "NULL":
                return lambda doc: _select(doc, path) is None
            if what in ("TRUE", "FALSE"):
                flag = what == "TRUE"
                return lambda doc: _select(doc, path) is flag
            raise UnsupportedPatternError(f"IS {what} is not a filter-pattern test")
        if keyword == "NOT" and self._next("word")[1].upper() == "EXISTS":
            return lambda doc: _select(doc, path) is _MISSING
        raise UnsupportedPatternError(f"JSON pattern: {text!r} after a selector is not emulated")
