"""The allow-list of client commands per state, and of FETCH items (allowlist.py), on plain values."""

from __future__ import annotations

import pytest

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap import capabilities as caps
from mailguard.protocols.imap.allowlist import (
    CAPABILITY_COMMANDS, COMMANDS, KNOWN_COMMANDS, SessionStates, State, fetch_refusal, mechanism_refusal, refusal,
)
from mailguard.protocols.imap.commands import CommandReader
from mailguard.protocols.imap.fetch import parse_fetch


def _request(text: bytes):  # type: ignore[no-untyped-def]
    reader = CommandReader()
    reader.receive_data(b"a " + text + b"\r\n")
    return parse_fetch(reader.next_event())  # type: ignore[arg-type]


def test_every_offered_capability_is_accounted_for() -> None:
    from mailguard.protocols.imap.allowlist import CAPABILITY_ARGUMENTS

    assert caps.ALLOWED == set(CAPABILITY_COMMANDS) | CAPABILITY_ARGUMENTS
    assert not set(CAPABILITY_COMMANDS) & CAPABILITY_ARGUMENTS


def test_every_offered_capability_enables_only_commands_we_understand() -> None:
    for capability, commands in CAPABILITY_COMMANDS.items():
        assert caps.allowed(capability), capability
        assert commands <= KNOWN_COMMANDS, (capability, commands - KNOWN_COMMANDS)


@pytest.mark.parametrize("capability", ["PREVIEW", "URLAUTH", "SEARCHRES", "URLAUTH=BINARY", "NOTIFY", "COMPRESS=DEFLATE",
                                        "METADATA", "X-GM-EXT-1", "XLIST", "CATENATE", "QRESYNC"])
def test_capabilities_of_commands_we_refuse_are_not_offered(capability: str) -> None:
    assert not caps.allowed(capability)


@pytest.mark.parametrize("name", ["URLFETCH", "GENURLAUTH", "RESETKEY", "GETMETADATA", "NOTIFY", "XLIST",
                                  "COMPRESS", "X-EVIL", "UID X-EVIL", "UID URLFETCH", "XYZZY"])
def test_unknown_commands_are_refused_in_every_state(name: str) -> None:
    every = set(State)
    assert refusal(name, every) == b"BAD Command not available through this proxy\r\n"


def test_commands_are_allowed_only_in_their_states() -> None:
    assert refusal("FETCH", {State.AUTHENTICATED}) == b"BAD FETCH is not valid in this state\r\n"
    assert refusal("SELECT", {State.NOT_AUTHENTICATED}) is not None
    assert refusal("LOGIN", {State.SELECTED}) is not None
    assert refusal("STARTTLS", {State.AUTHENTICATED}) is not None
    assert refusal("CAPABILITY", {State.NOT_AUTHENTICATED}) is None
    assert refusal("UID FETCH", {State.SELECTED}) is None
    assert not COMMANDS[State.LOGOUT]


def test_pipelined_commands_count_the_states_the_session_may_reach() -> None:
    states = SessionStates()
    states.sent(b"1", "LOGIN")
    assert refusal("SELECT", states.possible()) is None  # LOGIN and SELECT pipelined
    states.sent(b"2", "SELECT")
    assert refusal("UID FETCH", states.possible()) is None
    states.completed(b"1", ok=True)
    states.completed(b"2", ok=False)  # RFC 9051 §6.3.2: a failed SELECT leaves nothing selected
    assert states.possible() == {State.AUTHENTICATED}
    assert refusal("FETCH", states.possible()) is not None


def test_a_failed_login_stays_not_authenticated_and_preauth_starts_authenticated() -> None:
    states = SessionStates()
    states.sent(b"1", "LOGIN")
    states.completed(b"1", ok=False)
    assert states.possible() == {State.NOT_AUTHENTICATED}
    states.preauthenticated()
    assert states.possible() == {State.AUTHENTICATED}
    states.sent(b"2", "LOGOUT")
    states.completed(b"2", ok=True)
    assert states.possible() == {State.LOGOUT}


def test_mechanisms_with_a_security_layer_or_channel_binding_are_refused() -> None:
    assert mechanism_refusal(b"PLAIN dGVzdA==") is None
    assert mechanism_refusal(b"scram-sha-256") is None
    for mechanism in (b"GSSAPI", b"DIGEST-MD5", b"SCRAM-SHA-256-PLUS", b"EXTERNAL", b""):
        assert mechanism_refusal(mechanism) is not None


@pytest.mark.parametrize("text", [
    b"FETCH 1 (PREVIEW)", b"FETCH 1 (PREVIEW (LAZY))", b"UID FETCH 1 (X-EVIL)", b"FETCH 1 (BODY.PEEK)",
    b"FETCH 1 (BINARY)", b"FETCH 1 (FLAGS[1])", b"FETCH 1 (RFC822<0.10>)", b"FETCH 1 (UID) (VANISHED)",
    b"FETCH 1 (UID) (CHANGEDSINCE 1 X-MORE)", b"FETCH 1 X-GM-MSGID", b"FETCH $ (BODY.PEEK[])",
    b"UID FETCH 0 (FLAGS)", b"FETCH 1:x (FLAGS)", b"FETCH 1,,2 (FLAGS)",
])
def test_fetch_items_and_modifiers_we_do_not_know_are_refused(text: bytes) -> None:
    try:
        request = _request(text)
    except RemoteProtocolError:
        return  # refused already by the parser (interception.py answers BAD)
    assert fetch_refusal(request) is not None


@pytest.mark.parametrize("text", [
    b"FETCH 1:* ALL", b"FETCH 1 FULL", b"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
    b"UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100> BODY[1.MIME] BINARY.PEEK[1]<0.10>)",
    b"FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT BINARY.SIZE[1] BODY MODSEQ EMAILID THREADID SAVEDATE)",
    b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)", b"FETCH 4:2,7,9:*,* (FLAGS)",
])
def test_fetch_items_of_rfc_9051_and_the_offered_extensions_pass(text: bytes) -> None:
    assert fetch_refusal(_request(text)) is None
