"""IMAP data as a tree of nodes with their byte spans: atoms, strings, literals, lists.

Works on the exact wire bytes of a framed command or response (literals inline after
their ``{n}`` marker), so every node can be passed on as the very bytes it came as.
A "section atom" such as ``BODY[HEADER.FIELDS (Subject Date)]<0.100>`` is one atom:
inside brackets spaces and parentheses belong to the atom (RFC 9051 §9, section).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import NoReturn

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.framing import SECTION

_LITERAL_HEAD = b"{~"

# Each token is found by one compiled pattern rather than a Python step per byte (a FETCH
# response of a few items cost ~80 µs that way, most of a cached re-fetch; bench/live.py).
# An atom runs up to SP, "(", ")", CR, LF, a quote or "{"; a "[" in it opens a section that
# runs to its "]", spaces, lists and quoted strings included (framing.SECTION). A "[" that
# opens no complete section stops the match, and is refused below.
_ATOM = re.compile(rb'(?:[^ ()\r\n"{\[]++|' + SECTION.pattern + rb")*+")
# A quoted string: a backslash escapes the octet after it (RFC 9051 §4.3); an unescaped CR
# or LF is refused (``_refuse_quoted`` says which way a string that does not match is wrong).
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]++|\\[\s\S])*+)"')
_ESCAPED = re.compile(rb"\\(.)", re.DOTALL)
_SPACES = re.compile(rb" *")


class NodeKind(enum.Enum):
    ATOM = "atom"
    STRING = "string"
    LIST = "list"


@dataclass(slots=True)
class Node:
    kind: NodeKind
    start: int
    end: int
    #: atom text or string contents (quoted strings unescaped)
    value: bytes = b""
    items: list["Node"] = field(default_factory=list)
    #: a string that arrived as a literal (``{n}`` or ``~{n}``)
    literal: bool = False

    @property
    def is_nil(self) -> bool:
        return self.kind is NodeKind.ATOM and self.value.upper() == b"NIL"

    def upper(self) -> str:
        return self.value.decode("latin-1").upper()


class Lexer:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.data) or self.data[self.pos] in b"\r\n"

    def skip_spaces(self) -> None:
        if self.data[self.pos : self.pos + 1] == b" ":
            self.pos = _SPACES.match(self.data, self.pos).end()  # type: ignore[union-attr]

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def expect(self, char: bytes) -> None:
        if self.data[self.pos : self.pos + 1] != char:
            raise RemoteProtocolError(f"expected {char!r} at byte {self.pos} of {self.data[:60]!r}")
        self.pos += 1

    def read_node(self) -> Node:
        data = self.data
        pos = self.pos
        if data[pos : pos + 1] == b" ":
            pos = self.pos = _SPACES.match(data, pos).end()  # type: ignore[union-attr]
        if pos >= len(data):
            raise RemoteProtocolError("unexpected end of IMAP data")
        char = data[pos]
        if char == 0x28:  # "("
            return self.read_list()
        if char == 0x22:  # '"'
            return self._read_quoted()
        if char in _LITERAL_HEAD and (char == 0x7B or data[pos + 1 : pos + 2] == b"{"):
            return self._read_literal()
        return self._read_atom()

    def read_list(self) -> Node:
        start = self.pos
        self.expect(b"(")
        data = self.data
        items: list[Node] = []
        while True:
            pos = self.pos
            if data[pos : pos + 1] == b" ":
                pos = self.pos = _SPACES.match(data, pos).end()  # type: ignore[union-attr]
            if pos >= len(data) or data[pos] in b"\r\n":
                raise RemoteProtocolError("unterminated parenthesized list")
            if data[pos] == 0x29:  # ")"
                self.pos = pos + 1
                return Node(NodeKind.LIST, start, pos + 1, items=items)
            items.append(self.read_node())

    def read_until_end(self) -> list[Node]:
        """Every node up to the line end (the final CRLF is not consumed)."""
        nodes = []
        while not self.at_end():
            nodes.append(self.read_node())
        return nodes

    def _read_quoted(self) -> Node:
        start = self.pos
        match = _QUOTED.match(self.data, start)
        if match is None:
            self._refuse_quoted()
        self.pos = match.end()
        value = match.group(1)
        if b"\\" in value:  # backslash escapes " and \ (RFC 9051 §4.3)
            value = _ESCAPED.sub(rb"\1", value)
        return Node(NodeKind.STRING, start, self.pos, value=value)

    def _refuse_quoted(self) -> NoReturn:
        """Why the quoted string at ``pos`` cannot be read."""
        data, pos = self.data, self.pos + 1
        while pos < len(data):
            char = data[pos]
            if char == 0x5C:
                pos += 2
            elif char in b"\r\n":
                raise RemoteProtocolError("line end inside a quoted string")
            else:
                pos += 1
        raise RemoteProtocolError("unterminated quoted string")

    def _read_literal(self) -> Node:
        start = self.pos
        close = self.data.find(b"}", self.pos)
        if close < 0:
            raise RemoteProtocolError("unterminated literal announcement")
        spec = self.data[self.pos : close].lstrip(b"~{").rstrip(b"+")
        if not spec.isdigit():
            raise RemoteProtocolError(f"bad literal announcement {self.data[self.pos:close + 1]!r}")
        size = int(spec)
        body = close + 1
        if self.data[body : body + 2] == b"\r\n":
            body += 2
        elif self.data[body : body + 1] == b"\n":
            body += 1
        else:
            raise RemoteProtocolError("literal announcement not at a line end")
        if body + size > len(self.data):
            raise RemoteProtocolError("literal shorter than announced")
        self.pos = body + size
        return Node(NodeKind.STRING, start, self.pos, value=self.data[body : self.pos], literal=True)

    def _read_atom(self) -> Node:
        start = self.pos
        data = self.data
        end = _ATOM.match(data, start).end()  # type: ignore[union-attr]
        if end < len(data) and data[end] == 0x5B:  # "[" opening no complete section
            raise RemoteProtocolError("unterminated section")
        if end == start:
            raise RemoteProtocolError(f"unexpected {data[start:start + 1]!r} at byte {start}")
        self.pos = end
        return Node(NodeKind.ATOM, start, end, value=data[start:end])
