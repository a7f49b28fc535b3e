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
# Inside a list, the next token after any spaces, told apart by its group: "(", ")", a quoted
# string, the head of a literal, an atom. Anything else (CR, LF, the end, a "[" opening no
# section) matches nothing, and the node readers above say what is wrong.
_OPEN, _CLOSE, _STRING, _LITERAL, _WORD = range(1, 6)
_TOKEN = re.compile(rb" *(?:(\()|(\))|" + _QUOTED.pattern + rb"|(~?\{)|(" + _ATOM.pattern.removesuffix(rb"*+") + rb"++))")
#: lists nested deeper are refused (RFC 9051 §9 sets no bound; structure.py reads 64 levels)
MAX_DEPTH = 256


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
        """A parenthesized list and everything in it, nested lists included, token by token
        (one pattern match each) without a call per node."""
        self.expect(b"(")
        data, pos = self.data, self.pos
        starts, outer = [pos - 1], []  # of the lists open around the current one
        items: list[Node] = []
        token = _TOKEN.match
        while True:
            found = token(data, pos)
            if found is None:
                self.pos = pos
                self._refuse_in_list()
            kind = found.lastindex
            if kind == _WORD:
                items.append(Node(NodeKind.ATOM, found.start(_WORD), found.end(), value=found.group(_WORD)))
            elif kind == _STRING:
                value = found.group(_STRING)
                if b"\\" in value:  # backslash escapes " and \ (RFC 9051 §4.3)
                    value = _ESCAPED.sub(rb"\1", value)
                items.append(Node(NodeKind.STRING, found.start(_STRING) - 1, found.end(), value=value))
            elif kind == _OPEN:
                if len(starts) >= MAX_DEPTH:
                    raise RemoteProtocolError(f"lists nested more than {MAX_DEPTH} deep")
                starts.append(found.start(_OPEN))
                outer.append(items)
                items = []
            elif kind == _CLOSE:
                node = Node(NodeKind.LIST, starts.pop(), found.end(), items=items)
                if not outer:
                    self.pos = found.end()
                    return node
                items = outer.pop()
                items.append(node)
            else:  # a literal: its size says where it ends
                self.pos = found.start(_LITERAL)
                items.append(self._read_literal())
                pos = self.pos
                continue
            pos = found.end()

    def _refuse_in_list(self) -> NoReturn:
        """Why no token starts at ``pos`` inside a list."""
        self.skip_spaces()
        if self.pos >= len(self.data) or self.data[self.pos] in b"\r\n":
            raise RemoteProtocolError("unterminated parenthesized list")
        self.read_node()  # raises: the node's reader says what is wrong with it
        raise RemoteProtocolError(f"unexpected data at byte {self.pos}")  # not reached

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
