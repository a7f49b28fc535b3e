import pytest

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.limits import ImapLimits
from mailguard.protocols.imap.responses import NEED_DATA, Kind, Response, ResponseReader


def read_all(data: bytes, chunk: int = 0, limits: ImapLimits = ImapLimits()) -> list[Response]:
    """Every response in ``data``, fed whole or ``chunk`` bytes at a time (the framing must not care)."""
    reader = ResponseReader(limits)
    out = []
    pieces = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.receive_data(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            out.append(event)
    assert reader.buffered == 0
    return out


MULTI_LITERAL = (
    b"* 5 FETCH (UID 9 RFC822.SIZE 1234 BODY[HEADER] {14}\r\nSubject: x\r\n\r\n"
    b" BODY[TEXT] {5}\r\nhello FLAGS (\\Seen))\r\n"
    b"* 3 FETCH (FLAGS (\\Seen))\r\n"
    b"* 4 EXISTS\r\n"
    b"* 2 EXPUNGE\r\n"
    b"a1 OK FETCH completed\r\n"
)


@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_multi_literal_fetch_and_unsolicited_responses_are_framed_alike(chunk: int) -> None:
    events = read_all(MULTI_LITERAL, chunk)
    assert [(e.kind, e.word, e.number, e.tag) for e in events] == [
        (Kind.UNTAGGED, "FETCH", 5, None),
        (Kind.UNTAGGED, "FETCH", 3, None),
        (Kind.UNTAGGED, "EXISTS", 4, None),
        (Kind.UNTAGGED, "EXPUNGE", 2, None),
        (Kind.TAGGED, "OK", None, b"a1"),
    ]
    assert b"".join(e.raw for e in events) == MULTI_LITERAL


def test_a_literal_holding_crlf_and_a_fake_tagged_line_is_not_split() -> None:
    fake = b"x\r\na1 OK fake\r\n"
    data = b"* 1 FETCH (BODY[] {%d}\r\n" % len(fake) + fake + b")\r\na1 OK real\r\n"
    events = read_all(data, 3)
    assert len(events) == 2
    assert events[1].raw == b"a1 OK real\r\n"


def test_continuation_and_status_text_never_announce_literals() -> None:
    events = read_all(b"+ send {5}\r\n* OK [ALERT] see {5}\r\na OK done\r\n")
    assert [e.kind for e in events] == [Kind.CONTINUATION, Kind.UNTAGGED, Kind.TAGGED]


def test_an_oversize_literal_is_refused_before_its_bytes_arrive() -> None:
    reader = ResponseReader(ImapLimits(max_response_literal=1000))
    reader.receive_data(b"* 1 FETCH (BODY[] {9223372036854775807}\r\nabc")
    with pytest.raises(RemoteProtocolError, match="cap"):
        reader.next_event()


def test_an_overlong_line_is_refused() -> None:
    reader = ResponseReader(ImapLimits(max_response_line=100))
    reader.receive_data(b"* OK " + b"x" * 200)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_eof_inside_a_literal_is_an_error() -> None:
    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (BODY[] {10}\r\nabc")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle"):
        reader.next_event()


def test_malformed_tagged_status_is_refused() -> None:
    reader = ResponseReader()
    reader.receive_data(b"a1 FETCH (UID 1)\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_discard_buffered_drops_a_partial_line() -> None:
    reader = ResponseReader()
    reader.receive_data(b"a OK go\r\n* CAPABILITY IMAP4rev1 AUTH=PLAI")
    assert reader.next_event().raw == b"a OK go\r\n"
    assert reader.buffered > 0
    assert reader.discard_buffered() == b"* CAPABILITY IMAP4rev1 AUTH=PLAI"
    assert reader.buffered == 0
