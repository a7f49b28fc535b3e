from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.protocols.imap.framing import _DATA, LiteralMarker, ReceiveBuffer, literal_at_end, starts_a_string

import pytest

from mailguard.errors import RemoteProtocolError


@pytest.mark.parametrize(
    "line, marker",
    [
        (b"A001 LOGIN {11+}\r\n", LiteralMarker(11, sync=False, binary=False)),
        (b"A001 LOGIN {11}\r\n", LiteralMarker(11, sync=True, binary=False)),
        (b"A APPEND x ~{5}\r\n", LiteralMarker(5, sync=True, binary=True)),
        (b"* 1 FETCH (BODY[] {0}\n", LiteralMarker(0, sync=True, binary=False)),
        (b"A001 LOGIN {11} x\r\n", None),
        (b"A001 LOGIN 11}\r\n", None),
        (b"A001 NOOP\r\n", None),
    ],
)
def test_literal_at_end(line: bytes, marker: LiteralMarker | None) -> None:
    assert literal_at_end(line) == marker


def test_line_cap_applies_before_the_line_end_arrives() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * 100)
    with pytest.raises(RemoteProtocolError, match="longer than 64"):
        buffer.take_line(64, "line")


def test_a_line_trickling_in_byte_by_byte() -> None:
    buffer = ReceiveBuffer()
    for byte in b"a NOOP":
        buffer.feed(bytes([byte]))
        assert buffer.take_line(100, "line") is None
    buffer.feed(b"\r\nb")
    assert buffer.take_line(100, "line") == b"a NOOP\r\n"
    assert buffer.take(10) == b"b"


@pytest.mark.parametrize("line, starts", [
    (b"* 1 FETCH (BODY[] {5}\r\n", True),
    (b"* 1 FETCH (X {5}\r\n", True),
    (b"* 1 FETCH (X-EVIL x{5}\r\n", False),
    (b"* 1 FETCH (BODY[HEADER.FIELDS ({5}\r\n", False),
    (b"* 1 FETCH (BODY[HEADER.FIELDS (A)] {5}\r\n", True),
    (b'* 1 FETCH (BODY[HEADER.FIELDS ("]" {5}\r\n', False),
    (b'* 1 FETCH (X "a]" BODY[] {5}\r\n', True),
    (b'* 1 FETCH (X "a {5}\r\n', False),
    (b'* 1 FETCH (X "a\\" {5}\r\n', False),
    (b'* 1 FETCH (X "a\\\\" {5}\r\n', True),
])
def test_where_a_string_can_start(line: bytes, starts: bool) -> None:
    marker = literal_at_end(line)
    assert marker is not None and starts_a_string(line, marker) is starts


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b" ", b"(", b")", b"[", b"]", b"a", b"{", b"}", b"~", b"\\"]), max_size=30))
def test_the_quick_test_agrees_with_the_grammar(pieces: list[bytes]) -> None:
    # without a quoted string, two searches decide what the pattern of the grammar decides
    line = b"".join(pieces) + b"{5}\r\n"
    marker = literal_at_end(line)
    assert marker is not None
    prefix = line[: marker.at]
    assert starts_a_string(line, marker) == (_DATA.fullmatch(prefix) is not None and prefix[-1:] in (b" ", b"("))
