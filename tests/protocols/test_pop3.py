"""Byte-script tests of the POP3 proxy machine: no sockets, just bytes in and events out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.errors import LocalProtocolError
from mailguard.protocols.pop3 import (
    TOP_WHOLE_MESSAGE, Phase, Pop3Limits, Pop3Options, State, TlsMode,
)
from mailguard.protocols.pop3_events import (
    Closed, MessageUnscanned, ScanMessage, ScanResult, Side, StartTls, SwitchToRelay,
    TlsEstablished, TlsFailed,
)
from mailguard.protocols.pop3_framing import stuff
from tests.protocols.pop3_script import Script

TRICKY = b"Subject: dots\r\n\r\n.\r\n..\r\n.foo\r\nFrom .x\r\nlast line\r\n"


def logged_in(options: Pop3Options | None = None) -> Script:
    s = Script(options)
    s.client(b"USER u\r\n")
    assert s.take_server() == b"USER u\r\n"
    s.server(b"+OK\r\n")
    s.client(b"PASS p\r\n")
    assert s.take_server() == b"PASS p\r\n"
    s.server(b"+OK logged in\r\n")
    assert s.take_client() == b"+OK\r\n+OK logged in\r\n"
    assert s.proxy.state is State.TRANSACTION
    return s


def retr(s: Script, number: int, message: bytes, result: bytes | None = None) -> bytes:
    s.client(b"RETR %d\r\n" % number)
    assert s.take_server() == b"RETR %d\r\n" % number
    s.server(b"+OK %d octets\r\n" % len(message) + stuff(message))
    scans = s.take(ScanMessage)
    assert [(m.number, m.message) for m in scans] == [(number, message)]  # type: ignore[attr-defined]
    assert s.take_client() == b""  # nothing before the scan is done
    s.send(ScanResult(result))
    return s.take_client()


# --- framing and dot-stuffing --------------------------------------------------------------------


def test_clean_message_round_trips_byte_for_byte() -> None:
    s = logged_in()
    wire = b"+OK %d octets\r\n" % len(TRICKY) + stuff(TRICKY)
    assert retr(s, 1, TRICKY) == wire
    assert b"\r\n..\r\n" in wire and b"\r\n...\r\n" in wire and b"\r\n..foo\r\n" in wire


def test_message_without_final_newline_is_delivered_with_one() -> None:
    s = logged_in()
    out = retr(s, 1, b"Subject: x\r\n\r\nno newline\r\n", result=b"Subject: x\r\n\r\nno newline")
    assert out.endswith(b"no newline\r\n.\r\n")


def test_bare_lf_in_a_rewritten_message_becomes_crlf() -> None:
    s = logged_in()
    out = retr(s, 1, b"A: b\r\n\r\nbody\r\n", result=b"A: b\n\n.dot\nbody\n")
    assert out == b"+OK 20 octets\r\nA: b\r\n\r\n..dot\r\nbody\r\n.\r\n"


def test_rewritten_message_gets_its_octet_count_and_later_sizes_follow() -> None:
    s = logged_in()
    original = b"Subject: x\r\n\r\nEICAR\r\n"
    rewritten = b"X-MailGuard-Result: infected\r\nSubject: x\r\n\r\ncleaned\r\n"
    out = retr(s, 2, original, rewritten)
    assert out.startswith(b"+OK %d octets\r\n" % len(rewritten))
    s.client(b"LIST 2\r\n").server(b"+OK 2 %d\r\n" % len(original))
    assert s.take_client() == b"+OK 2 %d\r\n" % len(rewritten)
    s.client(b"LIST\r\n").server(b"+OK\r\n1 100\r\n2 %d\r\n.\r\n" % len(original))
    assert s.take_client() == b"+OK\r\n1 100\r\n2 %d\r\n.\r\n" % len(rewritten)
    s.client(b"STAT\r\n").server(b"+OK 2 %d\r\n" % (100 + len(original)))
    assert s.take_client() == b"+OK 2 %d\r\n" % (100 + len(rewritten))
    # once deleted, the message no longer counts in STAT
    s.client(b"DELE 2\r\n").server(b"+OK\r\n")
    s.take_client()
    s.client(b"STAT\r\n").server(b"+OK 1 100\r\n")
    assert s.take_client() == b"+OK 1 100\r\n"


def test_list_with_argument_is_single_line_and_err_does_not_swallow_next_answer() -> None:
    s = logged_in()
    s.client(b"LIST 1\r\nRETR 9\r\nNOOP\r\n")
    assert s.take_server() == b"LIST 1\r\n"  # one at a time
    s.server(b"+OK 1 120\r\n")
    assert s.take_client() == b"+OK 1 120\r\n"
    assert s.take_server() == b"RETR 9\r\n"
    s.server(b"-ERR no such message\r\n")
    assert s.take_client() == b"-ERR no such message\r\n"
    assert s.take_server() == b"NOOP\r\n"
    s.server(b"+OK\r\n")
    assert s.take_client() == b"+OK\r\n"


def test_pipelined_session_keeps_order_and_framing() -> None:
    s = Script()
    m1, m2 = b"A: 1\r\n\r\none\r\n", b"A: 2\r\n\r\n.two\r\n"
    s.client(b"USER x\r\nPASS y\r\nSTAT\r\nLIST\r\nRETR 1\r\nRETR 2\r\n")
    for ask, answer in [
        (b"USER x\r\n", b"+OK\r\n"), (b"PASS y\r\n", b"+OK\r\n"), (b"STAT\r\n", b"+OK 2 30\r\n"),
        (b"LIST\r\n", b"+OK\r\n1 15\r\n2 16\r\n.\r\n"),
    ]:
        assert s.take_server() == ask
        s.server(answer)
    assert s.take_server() == b"RETR 1\r\n"
    s.server(b"+OK\r\n" + stuff(m1))
    s.send(ScanResult(None))
    assert s.take_server() == b"RETR 2\r\n"
    s.server(b"+OK\r\n" + stuff(m2))
    s.send(ScanResult(None))
    assert s.take_client() == (
        b"+OK\r\n+OK\r\n+OK 2 30\r\n+OK\r\n1 15\r\n2 16\r\n.\r\n"
        + b"+OK\r\n" + stuff(m1) + b"+OK\r\n" + stuff(m2)
    )


def test_answers_arriving_one_byte_at_a_time() -> None:
    s = logged_in()
    s.client(b"RETR 1\r\n")
    s.take_server()
    for byte in b"+OK\r\n" + stuff(TRICKY):
        s.server(bytes([byte]))
    assert [m.message for m in s.take(ScanMessage)] == [TRICKY]  # type: ignore[attr-defined]


def test_empty_message_body() -> None:
    s = logged_in()
    s.client(b"RETR 1\r\n")
    s.server(b"+OK 0 octets\r\n.\r\n")
    assert [m.message for m in s.take(ScanMessage)] == [b""]  # type: ignore[attr-defined]
    s.send(ScanResult(None))
    assert s.take_client() == b"+OK 0 octets\r\n.\r\n"


def test_uidl_passes_through_unchanged() -> None:
    s = logged_in()
    s.client(b"UIDL\r\n").server(b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n")
    assert s.take_client() == b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"
    s.client(b"UIDL 2\r\n").server(b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n")
    assert s.take_client() == b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n"


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"From .x", b"abc", b" ."]), max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=6),
)
def test_any_message_in_any_chunking_is_scanned_whole_and_delivered_identically(
    lines: list[bytes], cuts: list[int]
) -> None:
    message = b"".join(line + b"\r\n" for line in [b"H: v", b"", *lines])
    wire = b"+OK\r\n" + stuff(message)
    s = logged_in()
    s.client(b"RETR 1\r\n")
    pos = 0
    for cut in cuts:
        s.server(wire[pos:pos + cut])
        pos += cut
    s.server(wire[pos:])
    assert [m.message for m in s.take(ScanMessage)] == [message]  # type: ignore[attr-defined]
    s.send(ScanResult(None))
    assert s.take_client() == wire


# --- TOP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lines", [0, 1, 5, 999999])
def test_top_fetches_whole_message_and_cuts_the_rewritten_one(lines: int) -> None:
    s = logged_in()
    original = b"Subject: hi\r\n\r\nl1\r\nl2\r\nEICAR\r\n"
    rewritten = b"X-MailGuard-Result: infected\r\nSubject: [detection E] hi\r\n\r\nl1\r\nl2\r\nnotice\r\n"
    s.client(b"TOP 3 %d\r\n" % lines)
    assert s.take_server() == b"TOP 3 %d\r\n" % TOP_WHOLE_MESSAGE
    s.server(b"+OK\r\n" + stuff(original))
    assert [m.message for m in s.take(ScanMessage)] == [original]  # type: ignore[attr-defined]
    s.send(ScanResult(rewritten))
    out = s.take_client()
    head = b"+OK\r\nX-MailGuard-Result: infected\r\nSubject: [detection E] hi\r\n\r\n"
    body = [b"l1\r\n", b"l2\r\n", b"notice\r\n"][: lines]
    assert out == head + b"".join(body) + b".\r\n"
    assert b"EICAR" not in out


def test_top_with_bad_arguments_is_refused_locally() -> None:
    s = logged_in()
    s.client(b"TOP 1\r\nTOP x 1\r\nRETR\r\n")
    assert s.take_server() == b""
    assert s.take_client().count(b"-ERR") == 3


# --- CAPA and SASL ------------------------------------------------------------------------------


def test_capa_is_filtered_to_what_the_proxy_follows() -> None:
    s = Script()
    s.client(b"CAPA\r\n").server(
        b"+OK\r\nTOP\r\nUSER\r\nPIPELINING\r\nSASL PLAIN GSSAPI SCRAM-SHA-256-PLUS LOGIN DIGEST-MD5\r\n"
        b"STLS\r\nX-WEIRD\r\nUIDL\r\nRESP-CODES\r\n.\r\n"
    )
    assert s.take_client() == b"+OK\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\nUIDL\r\nRESP-CODES\r\n.\r\n"


@pytest.mark.parametrize("options", [
    Pop3Options(tls=TlsMode.REFUSE), Pop3Options(implicit_tls=True),
])
def test_capa_hides_stls_when_the_proxy_cannot_take_part(options: Pop3Options) -> None:
    s = Script(options)
    s.client(b"CAPA\r\n").server(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n")
    assert s.take_client() == b"+OK\r\nUSER\r\n.\r\n"
    assert s.take_server() == b"CAPA\r\n"
    s.client(b"STLS\r\n")
    assert s.take_server() == b""
    assert s.take_client().startswith(b"-ERR")


def test_sasl_exchange_with_continuations_is_relayed() -> None:
    s = Script()
    s.client(b"AUTH CRAM-MD5\r\n")
    assert s.take_server() == b"AUTH CRAM-MD5\r\n"
    s.server(b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2U+\r\n")
    assert s.take_client() == b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2U+\r\n"
    s.client(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n")
    assert s.take_server() == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"
    s.server(b"+OK\r\n")
    assert s.take_client() == b"+OK\r\n"
    assert s.proxy.state is State.TRANSACTION


def test_sasl_empty_challenge_and_long_token() -> None:
    s = Script()
    s.client(b"AUTH XOAUTH2\r\n").server(b"+ \r\n")
    token = b"A" * 20000  # far longer than a command line may be
    s.client(token + b"\r\n")
    assert s.take_server() == b"AUTH XOAUTH2\r\n" + token + b"\r\n"


def test_sasl_mechanism_with_security_layer_is_refused_locally() -> None:
    s = Script()
    s.client(b"AUTH GSSAPI\r\nAUTH SCRAM-SHA-256-PLUS\r\n")
    assert s.take_server() == b""
    assert s.take_client().count(b"-ERR [AUTH]") == 2


def test_bare_auth_lists_only_allowed_mechanisms() -> None:
    s = Script()
    s.client(b"AUTH\r\n").server(b"+OK\r\nPLAIN\r\nGSSAPI\r\nLOGIN\r\n.\r\n")
    assert s.take_client() == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"


# --- commands the proxy refuses -----------------------------------------------------------------


def test_commands_outside_their_state_and_unknown_ones_never_reach_the_server() -> None:
    s = Script()
    s.client(b"RETR 1\r\nXTND XMIT\r\nLANG\r\n")
    assert s.take_server() == b""
    assert s.take_client().count(b"-ERR") == 3
    s = logged_in()
    s.client(b"STLS\r\nUSER again\r\n")
    assert s.take_server() == b""


def test_cr_inside_a_command_is_refused() -> None:
    s = Script()
    s.client(b"USER a\rPASS b\r\n")
    assert s.take_server() == b""
    assert s.take_client().startswith(b"-ERR")


def test_quit_closes_cleanly() -> None:
    s = logged_in()
    s.client(b"QUIT\r\n").server(b"+OK bye\r\n")
    assert s.take_client() == b"+OK bye\r\n"
    assert s.closed == Closed("QUIT", False)
    assert s.proxy.state is State.CLOSED


# --- STLS ---------------------------------------------------------------------------------------


def test_stls_switches_server_leg_first_then_client() -> None:
    s = Script()
    s.client(b"STLS\r\n")
    assert s.take_server() == b"STLS\r\n"
    s.server(b"+OK Begin TLS\r\n")
    assert s.take_client() == b""  # the client hears +OK only once upstream TLS is up
    assert s.take(StartTls) == [StartTls(Side.SERVER)]
    s.send(TlsEstablished(Side.SERVER))
    assert s.take(StartTls) == [StartTls(Side.CLIENT, preface=b"+OK Begin TLS\r\n")]
    s.send(TlsEstablished(Side.CLIENT))
    assert s.proxy.client_tls and s.proxy.phase is Phase.COMMAND
    s.client(b"CAPA\r\n").server(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n")
    assert s.take_client() == b"+OK\r\nUSER\r\n.\r\n"  # no second STLS
    s.client(b"STLS\r\n")
    assert s.take_client().startswith(b"-ERR")


def test_stls_command_injection_is_refused() -> None:
    s = Script()
    s.client(b"STLS\r\nCAPA\r\n")
    assert s.take_server() == b""  # neither STLS nor CAPA went upstream
    assert s.take_client().startswith(b"-ERR")
    assert s.closed is not None and s.closed.error


def test_stls_injection_in_a_later_packet_is_refused() -> None:
    s = Script()
    s.client(b"STLS\r\n")
    s.client(b"USER x\r\n")  # before the server answered
    assert s.take_server() == b"STLS\r\n"
    assert s.closed is not None and s.closed.error
    s = Script()
    s.client(b"STLS\r\n").server(b"+OK\r\n")
    s.client(b"CAPA\r\n")  # while upstream TLS is being set up
    assert s.closed is not None and s.closed.error
    assert s.take(StartTls) == [StartTls(Side.SERVER)]
    s.send(TlsEstablished(Side.SERVER))
    assert s.take(StartTls) == []


def test_stls_first_command_arriving_with_the_client_finished_is_processed() -> None:
    # The client's first command over TLS may come in the same write as its Finished: the TLS
    # layer hands it over before the driver reports TlsEstablished. It is TLS-protected data,
    # not an injection (that is checked before the client's handshake starts).
    s = Script()
    s.client(b"STLS\r\n").server(b"+OK Begin TLS\r\n")
    assert s.take(StartTls) == [StartTls(Side.SERVER)]
    s.send(TlsEstablished(Side.SERVER))
    assert s.take(StartTls) == [StartTls(Side.CLIENT, preface=b"+OK Begin TLS\r\n")]
    s.client(b"CAPA\r\n")  # decrypted along with the handshake's end
    s.send(TlsEstablished(Side.CLIENT))
    assert s.closed is None
    assert s.take_server() == b"STLS\r\nCAPA\r\n"
    s.server(b"+OK\r\nUSER\r\n.\r\n")
    assert s.take_client() == b"+OK\r\nUSER\r\n.\r\n"
    assert s.proxy.client_tls and s.closed is None


@pytest.mark.parametrize("injected", [b"+OK fake\r\n", b"+OK SASL PLA"])
def test_stls_response_injection_aborts(injected: bytes) -> None:
    s = Script()
    s.client(b"STLS\r\n").server(b"+OK go\r\n" + injected)
    assert s.take(StartTls) == []
    assert s.closed is not None and s.closed.error
    assert s.take_client().startswith(b"-ERR")


def test_stls_refused_by_server_keeps_session_plain_and_tells_client() -> None:
    s = Script()
    s.client(b"STLS\r\n").server(b"-ERR not now\r\n")
    assert s.take_client() == b"-ERR not now\r\n"
    assert s.take(StartTls) == [] and s.closed is None


def test_stls_upstream_handshake_failure_ends_with_error() -> None:
    s = Script()
    s.client(b"STLS\r\n").server(b"+OK\r\n")
    s.send(TlsFailed(Side.SERVER, "certificate verify failed"))
    assert s.take_client().startswith(b"-ERR [SYS/PERM]")
    assert s.closed is not None and s.closed.error


def test_stls_with_interception_off_hands_over_to_relay() -> None:
    s = Script(Pop3Options(tls=TlsMode.RELAY))
    s.client(b"STLS\r\n").server(b"+OK\r\n")
    assert s.take_client() == b"+OK\r\n"
    assert s.take(SwitchToRelay) == [SwitchToRelay()]
    assert s.proxy.state is State.RELAYED


# --- hostile servers ----------------------------------------------------------------------------


def test_server_drop_mid_message_gives_err_not_a_truncated_message() -> None:
    s = logged_in()
    s.client(b"RETR 1\r\n").server(b"+OK\r\nSubject: x\r\n\r\npartial")
    s.server(b"")
    out = s.take_client()
    assert out.startswith(b"-ERR") and b"partial" not in out
    assert s.closed is not None and s.closed.error


def test_server_endless_line_is_capped() -> None:
    s = Script(Pop3Options(limits=Pop3Limits(max_status_line=100)), greeting=b"")
    s.server(b"+OK" + b"x" * 200)
    assert s.closed is not None and s.closed.error
    assert len(s.proxy._server) <= 300  # noqa: SLF001 - memory stays bounded


def test_server_garbage_answer_is_an_error() -> None:
    s = logged_in()
    s.client(b"NOOP\r\n").server(b"HTTP/1.1 200 OK\r\n")
    assert s.take_client().startswith(b"-ERR [SYS/TEMP]")
    assert s.closed is not None and s.closed.error


def test_server_unsolicited_data_is_an_error() -> None:
    s = logged_in()
    s.server(b"+OK surprise\r\n")
    assert s.closed is not None and s.closed.error


def test_oversize_message_is_streamed_tagged_when_passing() -> None:
    s = logged_in(Pop3Options(limits=Pop3Limits(max_message=1000)))
    message = b"Subject: big\r\n\r\n" + b".line\r\n" * 400
    s.client(b"RETR 1\r\n").server(b"+OK %d octets\r\n" % len(message))
    wire = stuff(message)
    for i in range(0, len(wire), 300):
        s.server(wire[i:i + 300])
    assert s.take(ScanMessage) == []
    assert s.take(MessageUnscanned) == [MessageUnscanned(1, "limit", False)]
    out = s.take_client()
    tag = b'X-MailGuard-Result: unscanned; reason="limit"\r\n'
    assert out == b"+OK %d octets\r\n" % (len(message) + len(tag)) + tag + wire
    assert s.proxy.phase is Phase.COMMAND


def test_oversize_message_is_refused_when_blocking_so_it_stays_on_the_server() -> None:
    # Lose nothing: a "+OK" notice would let a delete-after-download client (fetchmail) DELE the
    # message it never got; "-ERR" leaves it on the server.
    s = logged_in(Pop3Options(on_oversize="block", limits=Pop3Limits(max_message=1000)))
    message = b"From: a@b\r\nSubject: big\r\nX-Other: 1\r\n\r\n" + b"payload\r\n" * 400
    s.client(b"RETR 1\r\n").server(b"+OK\r\n" + stuff(message))
    out = s.take_client()
    assert out == b"-ERR [SYS/PERM] message too large to scan (mailguard); it stays on the server\r\n"
    assert s.take(MessageUnscanned) == [MessageUnscanned(1, "limit", True)]
    assert s.take_server() == b"RETR 1\r\n"
    s.client(b"NOOP\r\n")
    assert s.take_server() == b"NOOP\r\n"
    s.server(b"+OK\r\n")
    assert s.take_client() == b"+OK\r\n"


def test_oversize_top_is_refused_when_blocking() -> None:
    s = logged_in(Pop3Options(on_oversize="block", limits=Pop3Limits(max_message=1000)))
    message = b"Subject: big\r\n\r\n" + b"payload\r\n" * 400
    s.client(b"TOP 1 0\r\n").server(b"+OK\r\n")
    wire = stuff(message)
    for i in range(0, len(wire), 300):
        s.server(wire[i:i + 300])
    assert s.take_client() == b"-ERR [SYS/PERM] message too large to scan (mailguard); it stays on the server\r\n"
    assert s.proxy.phase is Phase.COMMAND


def test_oversize_stream_dropped_mid_way_closes_without_terminator() -> None:
    s = logged_in(Pop3Options(limits=Pop3Limits(max_message=100)))
    s.client(b"RETR 1\r\n").server(b"+OK\r\n" + b"x" * 500 + b"\r\n").server(b"")
    out = s.take_client()
    assert not out.endswith(b"\r\n.\r\n")
    assert s.closed is not None and s.closed.error


def test_listing_cap() -> None:
    s = logged_in(Pop3Options(limits=Pop3Limits(max_listing=100)))
    s.client(b"UIDL\r\n").server(b"+OK\r\n" + b"1 abc\r\n" * 50)
    assert s.closed is not None and s.closed.error


# --- hostile clients ----------------------------------------------------------------------------


def test_client_endless_line_is_capped() -> None:
    s = Script(Pop3Options(limits=Pop3Limits(max_command_line=64)))
    s.client(b"USER " + b"a" * 100)
    assert s.take_server() == b""
    assert s.take_client().startswith(b"-ERR")
    assert s.closed is not None and s.closed.error


def test_client_backlog_asks_driver_to_stop_reading() -> None:
    s = logged_in(Pop3Options(limits=Pop3Limits(max_client_backlog=100)))
    s.client(b"RETR 1\r\n")
    assert s.proxy.wants_data(Side.CLIENT)
    s.client(b"NOOP\r\n" * 30)
    assert not s.proxy.wants_data(Side.CLIENT)


def test_client_eof_after_pipelined_quit_still_runs_it() -> None:
    s = logged_in()
    s.client(b"QUIT\r\n").client(b"")
    assert s.take_server() == b"QUIT\r\n"
    assert s.closed is None
    s.server(b"+OK\r\n")
    assert s.closed == Closed("QUIT", False)


def test_scan_result_outside_a_scan_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        logged_in().proxy.send(ScanResult(None))
