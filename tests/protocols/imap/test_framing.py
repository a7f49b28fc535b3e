from mailguard.protocols.imap.framing import LiteralMarker, ReceiveBuffer, literal_at_end

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
