"""POP3 framed as clients frame it (RFC 1939 §3): byte-script tests of what reaches the client
when the server's answer could be read otherwise than the proxy reads it."""

from __future__ import annotations

import io
import poplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.protocols.pop3 import Phase, Pop3Limits, Pop3Options
from mailguard.protocols.pop3_events import LinesDropped, MessageUnscanned, ScanMessage, ScanResult
from mailguard.protocols.pop3_framing import StreamGuard, read_message, stuff
from tests.protocols.pop3_script import Script
from tests.protocols.test_pop3 import logged_in


def poplib_reads(wire: bytes) -> list[bytes]:
    """The message lines poplib returns for a multi-line answer (status line included in ``wire``)."""
    reader = poplib.POP3.__new__(poplib.POP3)
    reader.file = io.BytesIO(wire)
    reader._debugging = 0
    return reader._getlongresp()[1]


# --- read_message --------------------------------------------------------------------------------


def test_a_correct_block_is_its_own_wire_form() -> None:
    block = b"Subject: x\r\n\r\n..dot\r\nline\r\n"
    assert read_message(block) == (b"Subject: x\r\n\r\n.dot\r\nline\r\n", True)
    plain = b"Subject: x\r\n\r\nline\r\n"
    message, canonical = read_message(plain, stuffed=False)
    assert message is plain and canonical


@pytest.mark.parametrize(("block", "message"), [
    (b"hello\n.\r\nrest\r\n", b"hello\r\n.\r\nrest\r\n"),            # poplib's end of answer
    (b"hello\r\n\r.\nrest\r\n", b"hello\r\n\r\n.\r\nrest\r\n"),        # poplib strips a leading CR
    (b"hello\r\n.\nrest\r\n", b"hello\r\n.\r\nrest\r\n"),
    (b"a\rb\r\n", b"a\r\nb\r\n"),                                      # a bare CR ends a line
    (b".x\r\n..y\r\n", b".x\r\n.y\r\n"),                               # unstuffed: kept as poplib does
    (b"a\r\n.x\r\n", b"a\r\n.x\r\n"),
])
def test_an_ambiguous_block_is_read_once_and_marked_for_re_encoding(block: bytes, message: bytes) -> None:
    assert read_message(block) == (message, False)


_PIECES = [b"a", b".", b"..", b".x", b"\r", b"\n", b"\r\n", b"\n.\r\n", b"\r.\n", b".\n", b"\x00", b" "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=20))
def test_what_the_client_gets_is_what_was_scanned_as_poplib_reads_it(pieces: list[bytes]) -> None:
    body = b"".join(pieces) + b"\r\n"
    s = logged_in()
    s.client(b"RETR 1\r\n").server(b"+OK\r\n" + body + b".\r\n")
    if s.closed is not None:
        return  # the body held its own terminator: the rest was an unsolicited answer
    scanned = [m.message for m in s.take(ScanMessage)]  # type: ignore[attr-defined]
    if not scanned:
        return  # a terminator inside the body ended it early: what came before is the message
    s.send(ScanResult(None))
    out = s.take_client()
    assert b"".join(line + b"\r\n" for line in poplib_reads(out)) == scanned[0]


# --- the machine ---------------------------------------------------------------------------------


def test_a_bare_lf_dot_line_is_delivered_stuffed_with_its_size() -> None:
    s = logged_in()
    s.client(b"RETR 1\r\n").server(b"+OK 20 octets\r\nhello\n.\r\n+OK smuggled\r\n.\r\n")
    [scan] = s.take(ScanMessage)
    assert scan.message == b"hello\r\n.\r\n+OK smuggled\r\n"  # type: ignore[attr-defined]
    s.send(ScanResult(None))
    assert s.take_client() == b"+OK 24 octets\r\nhello\r\n..\r\n+OK smuggled\r\n.\r\n"
    # later sizes follow what was delivered: one octet more than the server sent (23)
    s.client(b"LIST 1\r\n").server(b"+OK 1 23\r\n")
    assert s.take_client() == b"+OK 1 24\r\n"


def test_a_status_line_with_a_cr_inside_is_refused() -> None:
    s = logged_in()
    s.client(b"NOOP\r\n").server(b"+OK\r.\r\n")
    assert s.take_client().startswith(b"-ERR [SYS/TEMP]")
    assert s.closed is not None and s.closed.error


@pytest.mark.parametrize("greeting", [b"+ok ready\r\n", b"+OK<1.2@x>\r\n", b"+\r\n"])
def test_a_greeting_poplib_accepts_opens_the_session(greeting: bytes) -> None:
    s = Script(greeting=b"")
    s.server(greeting)
    assert s.take_client() == greeting and s.proxy.phase is Phase.COMMAND


def test_a_greeting_no_pop3_client_accepts_is_refused() -> None:
    s = Script(greeting=b"")
    s.server(b"* OK IMAP4rev1 ready\r\n")
    assert s.take_client().startswith(b"-ERR [SYS/TEMP] mailguard: the server's greeting is not a POP3")
    assert s.closed is not None and s.closed.error
    s = Script(greeting=b"")
    s.server(b"-ERR go away\r\n")
    assert s.take_client() == b"-ERR go away\r\n" and s.closed is not None


def test_junk_listing_lines_are_dropped_and_said() -> None:
    s = logged_in()
    s.client(b"LIST\r\n").server(b"+OK\r\n1 100\r\nSubject: junk\r\n2 200\n.\r\n3 x\r\n.\r\n")
    assert s.take_client() == b"+OK\r\n1 100\r\n2 200\r\n.\r\n"
    assert s.take(LinesDropped) == [LinesDropped("LIST", 3)]
    s.client(b"UIDL\r\n").server(b"+OK\r\n1 abc\r\n2 has space\r\n3 " + b"u" * 71 + b"\r\n.\r\n")
    assert s.take_client() == b"+OK\r\n1 abc\r\n.\r\n"


def test_capa_lines_that_are_not_printable_are_dropped() -> None:
    s = logged_in()
    s.client(b"CAPA\r\n").server(b"+OK\r\nUSER\rX-EVIL\r\nTOP\x00\r\nUIDL\r\n.\r\n")
    assert s.take_client() == b"+OK\r\nUSER\r\nUIDL\r\n.\r\n"


def test_an_over_size_stream_ends_at_a_line_clients_read_otherwise() -> None:
    s = logged_in(Pop3Options(limits=Pop3Limits(max_message=100)))
    head = b"Subject: big\r\n\r\n" + b"line\r\n" * 40
    s.client(b"RETR 1\r\n").server(b"+OK\r\n" + head)
    assert s.take(MessageUnscanned)
    passed = s.take_client()
    s.server(b"hello\n.\r\n+OK smuggled\r\n" + b"x\r\n" * 40 + b".\r\n")
    out = passed + s.take_client()
    assert b"smuggled" not in out and not out.endswith(b"\r\n.\r\n")
    assert s.closed is not None and s.closed.error


def test_a_message_fetched_ahead_that_needs_re_encoding_is_not_served_from_read_ahead() -> None:
    s = logged_in(Pop3Options(read_ahead=1))
    s.client(b"RETR 1\r\n").server(b"+OK\r\nfirst\r\n.\r\n")
    s.take(ScanMessage)
    s.send(ScanResult(None))
    assert s.take_server() == b"RETR 1\r\nLIST\r\n"
    s.server(b"+OK\r\n1 7\r\n2 13\r\n.\r\n")
    assert s.take_server() == b"TOP 2 2147483647\r\n"
    s.server(b"+OK\r\nsecond\n.\r\nx\r\n.\r\n")  # 13 octets as sent
    assert s.take(ScanMessage) == []  # dropped: the client's RETR fetches it itself
    s.client(b"RETR 2\r\n")
    assert s.take_server() == b"RETR 2\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES + [b"line"] * 6), max_size=30), st.lists(st.integers(1, 8), max_size=8))
def test_the_stream_guard_judges_alike_in_any_pieces(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    whole = StreamGuard().passes(data)
    guard, at, split = StreamGuard(), 0, True
    for cut in cuts:
        split = split and guard.passes(data[at:at + cut])
        at += cut
    split = split and guard.passes(data[at:])
    # a CR or a line-start dot at the very end waits for the next byte, in both
    assert whole == split


def test_stuffed_wire_passes_the_stream_guard() -> None:
    assert StreamGuard().passes(stuff(b".a\r\n..b\r\n.\r\nc\r\n"))


def test_a_sasl_response_with_a_cr_inside_never_reaches_the_server() -> None:
    s = Script()
    s.client(b"AUTH PLAIN\r\n")
    assert s.take_server() == b"AUTH PLAIN\r\n"
    s.server(b"+ \r\n")
    s.take_client()
    s.client(b"dGVzdA==\rRETR 1\r\n")
    assert s.take_server() == b""
    assert s.closed is not None and s.closed.error
