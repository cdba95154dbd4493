"""A small declarative schema for parsed TOML: each key's type, range and allowed values.

A `Table` lists its `Key`s; `Table.check(path, raw)` checks a parsed table against them and
returns every key's value (the default where the key is absent). Anything that does not fit
raises `SchemaError` with the key's path (`spawn[2].restart`) and the problem in a few words.
Error texts never quote a value whole (`echo`), so a huge value gives a short line, and they
never walk into an unexpected nested value, so a deep one costs nothing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Protocol

U8_MAX = 0xFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
ECHO_LIMIT = 40
"""Characters of a value an error text quotes at most."""
LIST_LIMIT = 50
"""Characters of allowed names an error text lists at most."""


class SchemaError(ValueError):
    """A value that does not fit its key: `key` is its path ("" for the whole document)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def echo(value: object) -> str:
    """`value` quoted for an error text, at most ECHO_LIMIT characters; tables and arrays by kind."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not -U64_MAX <= value <= U64_MAX:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value[: ECHO_LIMIT + 1] if isinstance(value, str) else value)
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 1] + "…"


def kind_of(value: object) -> str:
    """What TOML calls `value`'s type, for "expected X, got Y" texts."""
    if isinstance(value, (dict, list)):
        return echo(value)
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    return "a date or time"


def suggestion(raw: str, names: tuple[str, ...]) -> str:
    """ "; did you mean 'X'?" when `raw` is close to one of `names`, ignoring case and - versus _."""

    def folded(name: str) -> str:
        return name.lower().replace("_", "-")

    by_fold = {folded(name): name for name in names}
    close = difflib.get_close_matches(folded(raw[:64]), list(by_fold), n=1, cutoff=0.75)
    return f"; did you mean {by_fold[close[0]]!r}?" if close else ""


def listing(names: tuple[str, ...]) -> str:
    shown = ", ".join(names)
    if len(shown) <= LIST_LIMIT:
        return shown
    return shown[:LIST_LIMIT].rsplit(", ", 1)[0] + ", …"


class Value(Protocol):
    """One kind of value: checks a raw parsed value and returns what the program uses."""

    def check(self, key: str, raw: object) -> Any: ...

    def describe(self) -> str:
        """The allowed values in words (for error texts and the documentation)."""
        ...


@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def check(self, key: str, raw: object) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise SchemaError(key, f"expected an integer {self.describe()}, got {kind_of(raw)}")
        if not self.low <= raw <= self.high:
            raise SchemaError(key, f"{echo(raw)} is out of range {self.describe()}")
        return raw

    def describe(self) -> str:
        return f"{self.low}..{self.high}"


@dataclass(frozen=True)
class Boolean:
    def check(self, key: str, raw: object) -> bool:
        if not isinstance(raw, bool):
            raise SchemaError(key, f"expected true or false, got {kind_of(raw)}")
        return raw

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Text:
    """A one-line string of printable characters, `min_length` to `max_length` of them."""

    min_length: int
    max_length: int

    def check(self, key: str, raw: object) -> str:
        if not isinstance(raw, str):
            raise SchemaError(key, f"expected a string, got {kind_of(raw)}")
        if not self.min_length <= len(raw) <= self.max_length:
            raise SchemaError(key, f"a string of {len(raw)} characters; allowed {self.describe()}")
        if not raw.isprintable():
            raise SchemaError(key, f"{echo(raw)} has a control character (one line of text only)")
        return raw

    def describe(self) -> str:
        return f"{self.min_length}..{self.max_length} printable characters"


@dataclass(frozen=True)
class OneOf:
    """One of `names`, spelt exactly; a near miss gets a suggestion."""

    names: tuple[str, ...]
    what: str
    """What the names are, e.g. "role" (for "'KING' is not a role")."""

    def check(self, key: str, raw: object) -> str:
        if not isinstance(raw, str):
            raise SchemaError(key, f"expected a {self.what} name, got {kind_of(raw)}")
        if raw not in self.names:
            hint = suggestion(raw, self.names)
            raise SchemaError(key, f"{echo(raw)} is not a {self.what}{hint} (one of: {listing(self.names)})")
        return raw

    def describe(self) -> str:
        return "one of " + ", ".join(f'"{name}"' for name in self.names)


@dataclass(frozen=True)
class ListOf:
    item: Value
    distinct: bool = False
    """Each item at most once (the items' values must be hashable)."""

    def check(self, key: str, raw: object) -> list[Any]:
        if not isinstance(raw, list):
            raise SchemaError(key, f"expected an array, got {kind_of(raw)}")
        values = [self.item.check(f"{key}[{i}]", each) for i, each in enumerate(raw)]
        if self.distinct:
            seen = set()
            for i, value in enumerate(values):
                if value in seen:
                    raise SchemaError(f"{key}[{i}]", f"{echo(value)} is listed twice")
                seen.add(value)
        return values

    def describe(self) -> str:
        return f"an array of {'distinct ' if self.distinct else ''}items, each {self.item.describe()}"


@dataclass(frozen=True)
class Key:
    name: str
    value: Value
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Table:
    keys: tuple[Key, ...]

    def check(self, key: str, raw: object) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise SchemaError(key, f"expected a table, got {kind_of(raw)}")
        names = tuple(k.name for k in self.keys)
        for name in raw:
            if name not in names:
                hint = suggestion(name, names)
                raise SchemaError(key, f"unknown key {echo(name)}{hint} (allowed: {listing(names)})")
        values: dict[str, Any] = {}
        for each in self.keys:
            path = f"{key}.{each.name}" if key else each.name
            if each.name in raw:
                values[each.name] = each.value.check(path, raw[each.name])
            elif each.required:
                raise SchemaError(key, f"missing key {each.name!r}")
            else:
                values[each.name] = each.default
        return values

    def describe(self) -> str:
        return "a table"


@dataclass(frozen=True)
class ArrayOfTables:
    table: Table

    def check(self, key: str, raw: object) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise SchemaError(key, f"expected an array of [[{key}]] tables, got {kind_of(raw)}")
        return [self.table.check(f"{key}[{i}]", each) for i, each in enumerate(raw)]

    def describe(self) -> str:
        return "an array of tables"


DIGITS = re.compile(r"[0-9]+")
"""ASCII decimal digits only (str.isdigit also accepts ² and other scripts' digits)."""
