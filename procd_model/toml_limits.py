"""How deeply a TOML text nests, measured in one linear pass before the parser sees it.

Python's TOML parser recurses once per level of `[`/`{` nesting (thousands of levels raise
RecursionError) and takes time quadratic in the number of parts of a dotted key (`a.a.a...`: a
1 MiB key would take hours). `nesting(text)` measures both without parsing: the most brackets
open at once, and the most parts in one dotted chain, outside strings and comments. A chain that
is not a key (a float `1.5`, a time `07:32:00.999`) has at most three parts, so a small limit on
either refuses no sensible file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""(?P<string>"{3}|'{3}|"|')
      | (?P<comment>\#[^\n]*)
      | (?P<open>[\[{])
      | (?P<close>[\]}])
      | (?P<dot>[ \t]*\.[ \t]*)
      | (?P<part>[A-Za-z0-9_+:-]+)
      | (?P<other>[^"'\#\[\]{}.A-Za-z0-9_+:-]+)""",
    re.VERBOSE,
)
# The rest of a string after its opening quotes, up to and including its closing quotes (a
# multi-line string may end with up to two more quote characters than its delimiter).
_STRING_END = {
    '"""': re.compile(r'(?:[^"\\]|\\.|"{1,2}(?!"))*"{3,5}', re.DOTALL),
    "'''": re.compile(r"(?:[^']|'{1,2}(?!'))*'{3,5}"),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*"'),
    "'": re.compile(r"[^'\n]*'"),
}


@dataclass(frozen=True)
class Nesting:
    brackets: int
    """The most `[` and `{` open at once."""
    dotted: int
    """The most parts in one dotted chain (`a.b.c` has 3)."""


def nesting(text: str, stop_above: int | None = None) -> Nesting:
    """Bracket depth and dotted-chain length of `text`, outside strings and comments.

    An unterminated string ends the scan: the parser stops with an error there, so nothing after
    it is ever nested. Linear in the length of `text`; with `stop_above`, the scan stops as soon
    as either measure exceeds it.
    """
    depth = deepest = chain = longest = 0
    after_dot = False
    at = 0
    while at < len(text):
        token = _TOKEN.match(text, at)
        if token is None:  # pragma: no cover - the alternatives cover every character
            break
        kind, at = token.lastgroup, token.end()
        if stop_above is not None and max(deepest, longest) > stop_above:
            break
        if kind == "string":
            end = _STRING_END[token.group()].match(text, at)
            if end is None:
                break
            at = end.end()
        if kind in ("string", "part"):
            chain = chain + 1 if after_dot else 1
            longest = max(longest, chain)
            after_dot = False
        elif kind == "dot":
            after_dot = chain > 0
        else:
            chain, after_dot = 0, False
            if kind == "open":
                depth += 1
                deepest = max(deepest, depth)
            elif kind == "close":
                depth = max(depth - 1, 0)
    return Nesting(deepest, longest)
