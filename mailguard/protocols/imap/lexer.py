"""IMAP data as a tree of nodes with their byte spans: atoms, strings, literals, lists.

Works on the exact wire bytes of a framed command or response (literals inline after
their ``{n}`` marker), so every node can be passed on as the very bytes it came as.
A "section atom" such as ``BODY[HEADER.FIELDS (Subject Date)]<0.100>`` is one atom:
inside brackets spaces and parentheses belong to the atom (RFC 9051 §9, section).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.framing import SECTION

_ATOM_STOP = frozenset(b" ()\r\n\"{")
_LITERAL_HEAD = b"{~"


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
        while self.pos < len(self.data) and self.data[self.pos] == 0x20:
            self.pos += 1

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def expect(self, char: bytes) -> None:
        if self.data[self.pos : self.pos + 1] != char:
            raise RemoteProtocolError(f"expected {char!r} at byte {self.pos} of {self.data[:60]!r}")
        self.pos += 1

    def read_node(self) -> Node:
        self.skip_spaces()
        char = self.peek()
        if char is None:
            raise RemoteProtocolError("unexpected end of IMAP data")
        if char == 0x28:  # "("
            return self.read_list()
        if char == 0x22:  # '"'
            return self._read_quoted()
        if char in _LITERAL_HEAD and (char == 0x7B or self.data[self.pos + 1 : self.pos + 2] == b"{"):
            return self._read_literal()
        return self._read_atom()

    def read_list(self) -> Node:
        start = self.pos
        self.expect(b"(")
        items: list[Node] = []
        while True:
            self.skip_spaces()
            char = self.peek()
            if char is None or char in b"\r\n":
                raise RemoteProtocolError("unterminated parenthesized list")
            if char == 0x29:  # ")"
                self.pos += 1
                return Node(NodeKind.LIST, start, self.pos, items=items)
            items.append(self.read_node())

    def read_until_end(self) -> list[Node]:
        """Every node up to the line end (the final CRLF is not consumed)."""
        nodes = []
        while not self.at_end():
            nodes.append(self.read_node())
        return nodes

    def _read_quoted(self) -> Node:
        start = self.pos
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(self.data):
                raise RemoteProtocolError("unterminated quoted string")
            char = self.data[self.pos]
            if char == 0x5C:  # backslash escapes " and \ (RFC 9051 §4.3)
                if self.pos + 1 >= len(self.data):
                    raise RemoteProtocolError("unterminated quoted string")
                out.append(self.data[self.pos + 1])
                self.pos += 2
                continue
            if char in b"\r\n":
                raise RemoteProtocolError("line end inside a quoted string")
            self.pos += 1
            if char == 0x22:
                return Node(NodeKind.STRING, start, self.pos, value=bytes(out))
            out.append(char)

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
        while self.pos < len(data):
            char = data[self.pos]
            if char == 0x5B:  # "[": a section runs to its "]", spaces, lists and quoted strings included
                section = SECTION.match(data, self.pos)
                if section is None:
                    raise RemoteProtocolError("unterminated section")
                self.pos = section.end()
                continue
            if char in _ATOM_STOP:
                break
            self.pos += 1
        if self.pos == start:
            raise RemoteProtocolError(f"unexpected {data[start:start + 1]!r} at byte {start}")
        return Node(NodeKind.ATOM, start, self.pos, value=data[start : self.pos])
