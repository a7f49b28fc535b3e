"""The session's default-deny gate (gate.py) fed byte scripts: commands in, refusals out;
server responses in, what the client gets out."""

from __future__ import annotations

import pytest

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command, CommandReader, Reply
from mailguard.protocols.imap.fetch import parse_fetch
from mailguard.protocols.imap.gate import Gate
from mailguard.protocols.events import NEED_DATA
from mailguard.protocols.imap.responses import ResponseKind, Response, ResponseReader

TEXT = b"From: a\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n"
LITERAL = b"{%d}\r\n" % len(TEXT) + TEXT


def _commands(script: bytes) -> list[Command]:
    reader = CommandReader()
    reader.receive_data(script)
    out = []
    while (event := reader.next_event()) is not NEED_DATA:
        if isinstance(event, Command):
            out.append(event)
            reader.command_completed(event.tag)
        assert not isinstance(event, Reply)
    return out


def _responses(script: bytes) -> list[Response]:
    reader = ResponseReader()
    reader.receive_data(script)
    out = []
    while (event := reader.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def _client_sees(gate: Gate, script: bytes) -> bytes:
    return b"".join(gate.response(response).raw for response in _responses(script))


def test_a_session_script_passes_what_it_may_and_refuses_the_rest() -> None:
    gate = Gate()
    login, select, preview, urlfetch, fetch, compress, idle = _commands(
        b"1 LOGIN alice pw\r\n2 SELECT INBOX\r\n3 FETCH 1 (PREVIEW)\r\n4 URLFETCH imap://x\r\n"
        b"5 UID FETCH 1:* (FLAGS INTERNALDATE)\r\n6 COMPRESS DEFLATE\r\n7 IDLE\r\n")
    assert gate.refusal(select) is not None  # not logged in
    for command in (login, select):
        assert gate.refusal(command) is None
        gate.sent(command)
    assert gate.fetch_refusal(parse_fetch(preview)) is not None
    assert gate.refusal(urlfetch) == b"BAD Command not available through this proxy\r\n"
    assert gate.refusal(compress).startswith(b"NO COMPRESS")  # type: ignore[union-attr]
    assert gate.refusal(idle) is None
    request = parse_fetch(fetch)
    assert gate.refusal(fetch) is None and gate.fetch_refusal(request) is None
    gate.relayed_fetch(fetch.tag, request)
    seen = _client_sees(gate, b"1 OK done\r\n* 1 EXISTS\r\n2 OK [READ-WRITE] done\r\n"
                              b'* 1 FETCH (UID 1 FLAGS () INTERNALDATE "01-Jan-2024 10:00:00 +0000" X-EVIL '
                              + LITERAL + b")\r\n* X-EVIL " + LITERAL + b"\r\n5 OK done\r\n"
                              b'* 1 FETCH (INTERNALDATE "01-Jan-2024 10:00:00 +0000" FLAGS (\\Seen))\r\n')
    assert seen == (b"1 OK done\r\n* 1 EXISTS\r\n2 OK [READ-WRITE] done\r\n"
                    b'* 1 FETCH (UID 1 FLAGS () INTERNALDATE "01-Jan-2024 10:00:00 +0000")\r\n5 OK done\r\n'
                    b"* 1 FETCH (FLAGS (\\Seen))\r\n")  # once 5 is answered, INTERNALDATE is unasked


def test_fetch_data_that_holds_nothing_allowed_is_dropped_whole_and_named() -> None:
    passed = Gate().response(_responses(b"* 3 FETCH (BODY.PEEK[] " + LITERAL + b")\r\n")[0])
    assert passed.raw == b"" and passed.dropped == (b"BODY.PEEK[]",) and passed.fetch is None


def test_fetch_data_without_a_message_number_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        Gate().response(_responses(b"* FETCH (BODY[] " + LITERAL + b")\r\n")[0])


def test_a_preauth_session_starts_authenticated() -> None:
    gate = Gate()
    (select,) = _commands(b"1 SELECT INBOX\r\n")
    gate.preauthenticated()
    assert gate.refusal(select) is None


def test_after_idle_only_done_and_after_authenticate_only_sasl_lines_pass() -> None:
    from mailguard.protocols.imap.commands import ContinuationData

    gate = Gate()
    (authenticate,) = _commands(b"1 AUTHENTICATE PLAIN\r\n")
    gate.sent(authenticate)
    assert gate.continuation_allowed(ContinuationData(b"AGFsaWNlAHB3\r\n", b"1"))
    assert gate.continuation_allowed(ContinuationData(b"*\r\n", b"1"))
    assert not gate.continuation_allowed(ContinuationData(b"2 URLFETCH imap://x\r\n", b"1"))
    gate.response(_responses(b"1 OK done\r\n")[0])
    (idle,) = _commands(b"3 IDLE\r\n")
    gate.sent(idle)
    assert gate.continuation_allowed(ContinuationData(b"done\r\n", b"3"))
    assert not gate.continuation_allowed(ContinuationData(b"4 URLFETCH imap://x\r\n", b"3"))
    assert not gate.continuation_allowed(ContinuationData(b"DONE\r\n", b"1"))  # 1 is over


def _untagged(raw: bytes) -> Response:
    # built by hand, not read: what the gate does must not depend on what the reader lets through
    word = raw.split(b" ")[1].decode()
    return Response(raw=raw, kind=ResponseKind.UNTAGGED, tag=None, word=word.upper(), number=None)


_INNER = b"\r\n* 1 FETCH (RFC822 " + LITERAL + b")\r\n* OK z"
_LIST = b'* LIST () "/" {%d}\r\n' % len(_INNER) + _INNER + b"\r\n"


@pytest.mark.parametrize("raw", [
    b"* OK hi {%d}\r\n" % (len(_LIST) - len(_INNER) - 2),  # imaplib reads the LIST's head as a literal
    b"* BYE {5}\r\n", b"* PREAUTH [CAPABILITY IMAP4rev1] {0}\r\n", b"* NO {5+}\r\n", b"* BAD ~{5}\r\n",
    b"* OK {00000000000000000000005}\r\n",
    b'* LIST () "/" {%d+}\r\n' % len(_INNER) + _INNER + b"\r\n",  # imaplib reads "{n+}" as text
    b'* LIST () "/" ~{%d}\r\n' % len(_INNER) + _INNER + b"\r\n",
    b'* STATUS {3}\r\nbox (MESSAGES 1) {5+}\r\n',
    b'* ID ("name" {5}\nabcde)\r\n',
])
def test_a_literal_clients_would_frame_differently_ends_the_session(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="frame differently"):
        Gate().response(_untagged(raw))


@pytest.mark.parametrize("raw", [
    _LIST, b"* OK [ALERT] text\r\n", b'* STATUS {3}\r\nbox (MESSAGES 1)\r\n', b"* OK {5} is not at the end\r\n",
])
def test_literals_every_client_frames_alike_pass(raw: bytes) -> None:
    assert Gate().response(_untagged(raw)).raw == raw


def test_after_an_untagged_bye_no_command_goes_on() -> None:
    gate = Gate()
    (noop,) = _commands(b"1 NOOP\r\n")
    assert gate.refusal(noop) is None
    assert gate.response(_untagged(b"* BYE shutting down\r\n")).raw == b"* BYE shutting down\r\n"
    assert gate.refusal(noop) is not None
