"""Properties of the framing: chunking never changes what is framed; garbage never hangs or crashes."""

from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import AppendPart, LiteralChunk, Command, CommandReader, Reply
from mailguard.protocols.imap.limits import ImapLimits
from mailguard.protocols.events import NEED_DATA
from mailguard.protocols.imap.responses import ResponseReader

literal_bytes = st.binary(max_size=300)


@st.composite
def response_streams(draw) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    out, count = b"", 0
    for number in range(draw(st.integers(1, 6))):
        parts = draw(st.lists(literal_bytes, min_size=0, max_size=3))
        body = b" ".join(b"BODY[%d] {%d}\r\n" % (i, len(p)) + p for i, p in enumerate(parts))
        out += b"* %d FETCH (UID %d %s)\r\n" % (number + 1, number + 1, body)
        count += 1
        if draw(st.booleans()):
            out += b"* %d EXISTS\r\n" % number
            count += 1
    return out + b"a OK done\r\n", count + 1


@st.composite
def chunkings(draw, data: bytes) -> list[bytes]:  # type: ignore[no-untyped-def]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_chunking_frames_the_same_responses(data) -> None:  # type: ignore[no-untyped-def]
    stream, count = data.draw(response_streams())
    reader = ResponseReader()
    framed = []
    for chunk in data.draw(chunkings(stream)):
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            framed.append(event.raw)
    assert len(framed) == count and b"".join(framed) == stream


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_chunking_frames_the_same_commands(data) -> None:  # type: ignore[no-untyped-def]
    literals = data.draw(st.lists(literal_bytes, max_size=3))
    sync = data.draw(st.booleans())
    # SEARCH is collected whole (the reader answers "+"); APPEND is handed out as it comes,
    # its "+" left to the session (commands.py), and its pieces join to the same bytes.
    verb = data.draw(st.sampled_from([b"SEARCH TEXT", b"APPEND INBOX"]))
    marker = b"}" if sync else b"+}"
    command = b"a1 " + verb + b"".join(b" {%d%s\r\n" % (len(p), marker) + p for p in literals) + b"\r\n"
    stream = command + b"a2 NOOP\r\n"
    reader = CommandReader()
    commands, replies, pieces = [], 0, b""
    for chunk in data.draw(chunkings(stream)):
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, Reply):
                replies += 1
            elif isinstance(event, (AppendPart, LiteralChunk)):
                pieces += event.data
                if isinstance(event, AppendPart) and event.literal is None:
                    commands.append(pieces)
                    pieces = b""
                elif isinstance(event, AppendPart) and event.literal.sync:
                    replies += 1
            else:
                assert isinstance(event, Command)
                commands.append(event.raw)
    assert commands == [command, b"a2 NOOP\r\n"]
    assert replies == (len(literals) if sync else 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_ends_in_events_or_a_remote_protocol_error(garbage: bytes) -> None:
    limits = ImapLimits(max_response_line=512, max_response_literal=1000, max_command_line=512,
                        max_command_literal=1000, max_append_literal=1000, max_command_size=4000)
    for reader in (ResponseReader(limits), CommandReader(limits)):
        try:
            reader.receive_data(garbage)
            for _ in range(len(garbage) + 2):
                if reader.next_event() is NEED_DATA:
                    break
            else:
                raise AssertionError("the reader did not stop producing events")
        except RemoteProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fetch_parsers_refuse_garbage_with_a_protocol_error(garbage: bytes) -> None:
    from mailguard.protocols.imap.fetch import parse_fetch
    from mailguard.protocols.imap.fetch_response import parse_fetch_response

    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (" + garbage.replace(b"\n", b" ") + b")\r\n")
    try:
        response = reader.next_event()
        if response is not NEED_DATA:
            parse_fetch_response(response)
    except RemoteProtocolError:
        pass
    commands = CommandReader()
    commands.receive_data(b"a FETCH 1 " + garbage.replace(b"\n", b" ").replace(b"{", b"(") + b"\r\n")
    try:
        command = commands.next_event()
        if isinstance(command, Command):
            parse_fetch(command)
    except RemoteProtocolError:
        pass
