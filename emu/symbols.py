"""Symbol names as people read them: Rust legacy-mangled names demangled, without their hash."""

from __future__ import annotations

import re

_RUST_HASH = re.compile(r"h[0-9a-f]{16}")
_RUST_ESCAPES = {
    "SP": "@",
    "BP": "*",
    "RF": "&",
    "LT": "<",
    "GT": ">",
    "LP": "(",
    "RP": ")",
    "C": ",",
}
_RUST_ESCAPE = re.compile(r"\$([A-Z]{1,2}|u[0-9a-f]{2,6})\$")


def demangle(name: str) -> str:
    """`name` demangled if it is a Rust legacy (`_ZN...E`) symbol, else `name` unchanged."""
    if not (name.startswith("_ZN") and name.endswith("E")):
        return name
    parts: list[str] = []
    body, i = name[3:-1], 0
    while i < len(body):
        digits = i
        while i < len(body) and body[i].isdigit():
            i += 1
        if i == digits:
            return name
        length = int(body[digits:i])
        if i + length > len(body):
            return name
        parts.append(body[i : i + length])
        i += length
    if len(parts) > 1 and _RUST_HASH.fullmatch(parts[-1]):
        parts.pop()
    if not parts:
        return name
    return "::".join(_unescape(part) for part in parts)


def _unescape(part: str) -> str:
    if part.startswith("_$"):
        part = part[1:]

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u"):
            point = int(code[1:], 16)
            return chr(point) if point <= 0x10FFFF else match.group(0)
        return _RUST_ESCAPES.get(code, match.group(0))

    return _RUST_ESCAPE.sub(one, part).replace("..", "::")
