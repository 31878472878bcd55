"""OSC 1.0 address patterns, matched in time linear in the pattern's length.

``compile_pattern("/ffvj/l[0-2]/{zoom,rotate}")`` → an ``AddressPattern``; ``.matches(address)``.
``?`` is one character and ``*`` any run of characters within one part (never ``/``); ``[a-c]`` /
``[!a-c]`` a character (not) in the set; ``{foo,bar}`` one of the strings. ValueError for a malformed
pattern (an unclosed bracket or brace, an empty set, a reversed range) or one longer than
``MAX_PATTERN``.

Why not a regular expression: Python's ``re`` backtracks, so a pattern of many ``*`` (44 bytes:
``/ffvj/*/`` + 26 ``*`` + ``!``) takes exponential time while holding the GIL, and the render loop
stops with it. Here each part of the address is matched by walking the set of positions the pattern
can have reached (an NFA simulation): at most (pattern length) × (part length) steps, whatever the
pattern. ffvj's addresses are short and few, so that is microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PATTERN = 256  # characters: ffvj's own addresses are under 40
PATTERN_CHARS = frozenset("*?[]{}")

# One token of a part: ("lit", text) | ("one",) | ("star",) | ("set", ranges, negate) | ("alt", strings)
_Token = tuple


def is_pattern(address: str) -> bool:
    return not PATTERN_CHARS.isdisjoint(address)


def _char_set(body: str, pattern: str) -> tuple[tuple[str, str], ...]:
    """A set's characters as (low, high) ranges: a range stays two characters however wide it is
    (expanding [\x01-\u3001] into a set took 129 ms a pattern, holding the GIL)."""
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            lo, hi = body[k], body[k + 2]
            if lo > hi:
                raise ValueError(f"bad range {lo}-{hi} in {pattern!r}")
            ranges.append((lo, hi))
            k += 3
        else:
            ranges.append((body[k], body[k]))
            k += 1
    return tuple(ranges)


def _in_set(ch: str, ranges: tuple[tuple[str, str], ...]) -> bool:
    return any(lo <= ch <= hi for lo, hi in ranges)


def _tokens(part: str, pattern: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        if c == "*":
            if not out or out[-1] != ("star",):  # ** is *
                out.append(("star",))
        elif c == "?":
            out.append(("one",))
        elif c == "[":
            end = part.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unclosed '[' in {pattern!r}")
            body = part[i + 1:end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            if not body:
                raise ValueError(f"bad character set [{part[i + 1:end]}] in {pattern!r}")
            out.append(("set", _char_set(body, pattern), negate))
            i = end
        elif c == "{":
            end = part.find("}", i + 1)
            if end < 0:
                raise ValueError(f"unclosed '{{' in {pattern!r}")
            alternatives = part[i + 1:end].split(",")
            if any("{" in a for a in alternatives):
                raise ValueError(f"bad alternatives {{{part[i + 1:end]}}} in {pattern!r}")
            out.append(("alt", tuple(dict.fromkeys(alternatives))))
            i = end
        elif c in "]}":
            raise ValueError(f"unbalanced {c!r} in {pattern!r}")
        elif out and out[-1][0] == "lit":
            out[-1] = ("lit", out[-1][1] + c)
        else:
            out.append(("lit", c))
        i += 1
    return tuple(out)


def _match_part(tokens: tuple[_Token, ...], text: str) -> bool:
    """Whether one part of an address matches: the set of reachable positions, token by token."""
    n = len(text)
    here = {0}
    for token in tokens:
        kind = token[0]
        if kind == "star":
            here = set(range(min(here), n + 1))
        elif kind == "lit":
            lit = token[1]
            here = {p + len(lit) for p in here if text.startswith(lit, p)}
        elif kind == "one":
            here = {p + 1 for p in here if p < n}
        elif kind == "set":
            chars, negate = token[1], token[2]
            here = {p + 1 for p in here if p < n and _in_set(text[p], chars) != negate}
        else:  # alt
            here = {p + len(a) for p in here for a in token[1] if text.startswith(a, p)}
        if not here:
            return False
    return n in here


@dataclass(frozen=True)
class AddressPattern:
    """A compiled pattern: one token list per part of the address."""

    text: str
    parts: tuple[tuple[_Token, ...], ...]

    def matches(self, address: str) -> bool:
        parts = address.split("/")
        return len(parts) == len(self.parts) and all(
            _match_part(tokens, part) for tokens, part in zip(self.parts, parts))


def compile_pattern(pattern: str) -> AddressPattern:
    """The pattern, checked and compiled (see the module docstring). ValueError if malformed."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern of {len(pattern)} characters; at most {MAX_PATTERN}")
    # No token spans a '/': a set or alternatives containing one are malformed, as OSC 1.0 has it.
    for opener, closer in (("[", "]"), ("{", "}")):
        i = pattern.find(opener)
        while i >= 0:
            end = pattern.find(closer, i + 1)
            if end >= 0 and "/" in pattern[i + 1:end]:
                raise ValueError(f"{opener}...{closer} across a '/' in {pattern!r}")
            i = pattern.find(opener, i + 1)
    return AddressPattern(pattern, tuple(_tokens(part, pattern) for part in pattern.split("/")))
