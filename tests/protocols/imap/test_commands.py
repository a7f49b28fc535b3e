import pytest

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import (
    AppendPart,
    Command,
    CommandReader,
    ContinuationData,
    LiteralChunk,
    ReaderState,
    Reply,
)
from mailguard.protocols.imap.limits import ImapLimits
from mailguard.protocols.events import NEED_DATA


def drain(reader: CommandReader, data: bytes = b"") -> list:
    if data:
        reader.receive_data(data)
    out = []
    while (event := reader.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_rfc7888_non_synchronising_literals() -> None:
    # RFC 7888 §3's example, in one write: two literals, no continuation asked for.
    raw = b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n"
    [command] = drain(CommandReader(), raw)
    assert command == Command(raw=raw, tag=b"A001", name="LOGIN", args_at=10)


def test_synchronising_literal_gets_a_local_continuation() -> None:
    reader = CommandReader()
    events = drain(reader, b"A001 LOGIN {11}\r\n")
    assert len(events) == 1 and isinstance(events[0], Reply) and events[0].data.startswith(b"+ ")
    assert drain(reader, b"FRED FOOBAR {7}\r\n")[0].data.startswith(b"+ ")
    [command] = drain(reader, b"fat man\r\n")
    assert command.raw == b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n"


def test_literal_containing_a_command_is_data() -> None:
    payload = b"x\r\nA002 LOGOUT\r\n"
    raw = b"A001 APPEND INBOX {%d+}\r\n" % len(payload) + payload + b"\r\n"
    events = drain(CommandReader(), raw + b"A003 NOOP\r\n")
    # An APPEND is handed out as it comes; its pieces join to the command, the literal stays data.
    streamed = [e for e in events if isinstance(e, (AppendPart, LiteralChunk))]
    assert b"".join(e.data for e in streamed) == raw
    assert streamed[0].first and streamed[-1].literal is None
    assert [e.name for e in events if isinstance(e, Command)] == ["NOOP"]


def test_an_append_literal_is_handed_out_as_it_comes_not_held() -> None:
    reader = CommandReader()
    [head] = drain(reader, b"a APPEND Sent (\\Seen) {10000000}\r\n")
    assert head == AppendPart(b"a", b"a APPEND Sent (\\Seen) {10000000}\r\n", head.literal, first=True)
    assert head.literal is not None and head.literal.sync and head.literal.size == 10_000_000
    for _ in range(10):
        [chunk] = drain(reader, b"x" * 1_000_000)
        assert chunk == LiteralChunk(b"a", b"x" * 1_000_000)
        assert reader.buffered == 0  # nothing of the message is kept
    [end] = drain(reader, b"\r\n")
    assert end == AppendPart(b"a", b"\r\n", None, first=False)
    [command] = drain(reader, b"b NOOP\r\n")
    assert command.name == "NOOP"


def test_oversize_synchronising_literal_is_refused_with_toobig() -> None:
    reader = CommandReader(ImapLimits(max_append_literal=100))
    [reply] = drain(reader, b"a APPEND INBOX {5000}\r\n")
    assert reply == Reply(b"a NO [TOOBIG] Literal too large for this proxy\r\n", ends_tag=b"a")
    [command] = drain(reader, b"b NOOP\r\n")
    assert command.tag == b"b"


def test_oversize_non_synchronising_literal_is_read_dropped_and_refused_without_desync() -> None:
    reader = CommandReader(ImapLimits(max_append_literal=4096))
    body = b"A" * 4000 + b"\r\nz LOGOUT\r\n" + b"B" * 987
    events = drain(reader, b"a APPEND INBOX {5000+}\r\n" + body + b"\r\nb NOOP\r\n")
    assert events[0] == Reply(b"a BAD [TOOBIG] Literal too large for this proxy\r\n", ends_tag=b"a")
    assert [(e.tag, e.name) for e in events[1:]] == [(b"b", "NOOP")]


def test_pipelined_commands_in_one_write() -> None:
    events = drain(CommandReader(), b"a FETCH 1 BODY.PEEK[]\r\nb UID FETCH 7 BODY.PEEK[2]\r\nc NOOP\r\n")
    assert [(e.tag, e.name) for e in events] == [(b"a", "FETCH"), (b"b", "UID FETCH"), (b"c", "NOOP")]
    assert events[1].args == b"7 BODY.PEEK[2]"


def test_idle_done_is_continuation_data_not_a_command() -> None:
    reader = CommandReader()
    events = drain(reader, b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert events == [
        Command(raw=b"a IDLE\r\n", tag=b"a", name="IDLE", args_at=6),
        ContinuationData(raw=b"DONE\r\n", tag=b"a"),
        Command(raw=b"b NOOP\r\n", tag=b"b", name="NOOP", args_at=6),
    ]


def test_rejected_idle_returns_to_commands() -> None:
    reader = CommandReader()
    drain(reader, b"a IDLE\r\n")
    reader.command_completed(b"a")
    assert reader.state is ReaderState.COMMAND
    assert drain(reader, b"b NOOP\r\n")[0].name == "NOOP"


def test_authenticate_lines_until_the_server_ends_the_command() -> None:
    reader = CommandReader()
    events = drain(reader, b"a AUTHENTICATE PLAIN\r\nAGZyZWQAZm9vYmFy\r\n")
    assert events[1] == ContinuationData(raw=b"AGZyZWQAZm9vYmFy\r\n", tag=b"a")
    assert drain(reader, b"*\r\n") == [ContinuationData(raw=b"*\r\n", tag=b"a")]
    reader.command_completed(b"other")
    assert reader.state is ReaderState.CONTINUATION
    reader.command_completed(b"a")
    assert drain(reader, b"b NOOP\r\n")[0].tag == b"b"


def test_starttls_pauses_and_exposes_injected_bytes() -> None:
    reader = CommandReader()
    events = drain(reader, b"a STARTTLS\r\nb LOGIN u p\r\n")
    assert [e.name for e in events] == ["STARTTLS"]
    assert reader.state is ReaderState.PAUSED and reader.buffered == len(b"b LOGIN u p\r\n")
    assert reader.discard_buffered() == b"b LOGIN u p\r\n"
    reader.resume()
    assert drain(reader, b"c NOOP\r\n")[0].tag == b"c"


def test_caps_on_lines() -> None:
    reader = CommandReader(ImapLimits(max_command_line=50))
    reader.receive_data(b"a LOGIN " + b"x" * 100)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_a_command_without_a_name_is_malformed() -> None:
    reader = CommandReader()
    reader.receive_data(b"(((\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_eof_in_the_middle_of_a_literal() -> None:
    reader = CommandReader()
    drain(reader, b"a LOGIN {5+}\r\nab")
    reader.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


@pytest.mark.parametrize("line", [
    b"a LOGIN x{5+}\r\n",  # no string starts after "x": a grammar-following server reads no literal
    b"a LOGIN \"open {5+}\r\n",  # inside a quoted string
    b"a FETCH 1 BODY[HEADER.FIELDS ({5+}\r\n",  # inside a section
    b"a LOGIN u {3+}\r\nabc{5+}\r\n",  # right after a literal
])
def test_a_literal_where_no_string_starts_ends_the_session(line: bytes) -> None:
    reader = CommandReader()
    reader.receive_data(line + b"hello\r\n")
    with pytest.raises(RemoteProtocolError, match="no string can start"):
        while reader.next_event() is not NEED_DATA:
            pass


def test_every_digit_of_a_literal_count_counts() -> None:
    raw = b"a LOGIN {0000000000000000000000005+}\r\nhello pw\r\n"
    [command] = drain(CommandReader(), raw)
    assert command.raw == raw


def test_a_literal8_and_its_flags_in_append() -> None:
    raw = b"a APPEND INBOX (\\Seen) ~{3+}\r\n\0\1\2\r\n"
    head, chunk, end = drain(CommandReader(), raw)  # streamed: the upload is never held whole
    assert head.first and head.literal is not None and head.literal.binary and head.literal.size == 3
    assert head.data + chunk.data + end.data == raw and chunk.data == b"\0\1\2"


@pytest.mark.parametrize("data", [b"a NOOP\rb UID FETCH 1 BODY[]\r\n", b"a LOGIN u p\0\r\n", b"a NOOP\r\r\n",
                                  b"a IDLE\r\nDO\rNE\r\n"])
def test_bare_cr_and_nul_in_a_command_line_end_the_session(data: bytes) -> None:
    reader = CommandReader()
    reader.receive_data(data)
    with pytest.raises(RemoteProtocolError, match="bare CR"):
        while reader.next_event() is not NEED_DATA:
            pass


def test_a_bare_lf_ends_a_command_line() -> None:
    assert [e.name for e in drain(CommandReader(), b"a NOOP\nb NOOP\r\n")] == ["NOOP", "NOOP"]
