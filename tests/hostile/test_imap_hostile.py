"""Hostile IMAP servers behind the whole engine (explicit route), Python's imaplib as the client.

Each case is a way a server (or a man in the middle of a plaintext session) could slip message
text past the scan; each asserts that the test virus never reaches anything imaplib hands its
caller: return values, error texts, and the untagged responses it keeps for the application.
"""

from __future__ import annotations

import asyncio
import copy
import imaplib
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.hostile.scripted_imap import Script, ScriptedImapServer, literal
from tests.proxy.harness import EC, clean_message, filter_server, infected_message, run

pytestmark = pytest.mark.timeout(90)

INFECTED = infected_message(1)
#: what no client may ever be handed (the test virus, as the scanner would find it)
VIRUS = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"


def _bytes_in(value: Any) -> bytes:
    """Every byte string inside what imaplib returned or kept, joined."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, dict):
        return b"\n".join(_bytes_in(k) + b"\n" + _bytes_in(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return b"\n".join(_bytes_in(v) for v in value)
    return repr(value).encode()


def _session(port: int, actions: Callable[[imaplib.IMAP4, list[Any]], None]) -> bytes:
    """Log in, select, run ``actions``; everything imaplib handed back, as bytes."""
    seen: list[Any] = []
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        seen.append(client.login("alice", "secret"))
        seen.append(client.select("INBOX"))
        actions(client, seen)
    except imaplib.IMAP4.error as exc:  # abort is one too
        seen.append(str(exc))
    seen.append(copy.deepcopy(client.untagged_responses))
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass
    return _bytes_in(seen)


def _through_engine(messages: list[bytes], script: Script,
                    actions: Callable[[imaplib.IMAP4, list[Any]], None],
                    values: dict[str, Any] | None = None) -> tuple[bytes, ScriptedImapServer]:
    async def scenario() -> tuple[bytes, ScriptedImapServer]:
        async with ScriptedImapServer(messages, script) as server:
            async with filter_server(server.port, values=values) as (_, port):
                return await asyncio.to_thread(_session, port, actions), server

    return run(scenario())


def _idle(client: imaplib.IMAP4, seen: list[Any]) -> None:
    """IDLE (RFC 2177) with imaplib's own reader: DONE once the server says it is idling."""
    tag = client._command("IDLE")  # type: ignore[attr-defined]
    while client._get_response() is not None:  # type: ignore[attr-defined]
        pass  # untagged responses before the continuation request
    client.send(b"DONE\r\n")
    seen.append(client._command_complete("IDLE", tag))  # type: ignore[attr-defined]
    seen.append(copy.deepcopy(client.untagged_responses))


@pytest.fixture(autouse=True)
def _imaplib_knows_extra_commands(monkeypatch):  # type: ignore[no-untyped-def]
    # imaplib (before 3.14) refuses command names it does not list; an application can add them.
    for name in ("IDLE", "URLFETCH", "XYZZY"):
        monkeypatch.setitem(imaplib.Commands, name, ("AUTH", "SELECTED"))


# --- 1. unsolicited FETCH data the filter did not recognise ---------------------------------------

CARRIERS = {
    "BODY.PEEK[]": b"BODY.PEEK[] " + literal(INFECTED),
    "RFC822.PEEK": b"RFC822.PEEK " + literal(INFECTED),
    "BINARY.PEEK[]": b"BINARY.PEEK[] " + literal(INFECTED),
    "BODY unsectioned": b"BODY " + literal(INFECTED),
    "X-EVIL": b"X-EVIL " + literal(INFECTED),
    "X-EVIL literal8": b"X-EVIL ~" + literal(INFECTED),
}


def _pushed(item: bytes) -> bytes:
    return b"* 2 FETCH (UID 2 FLAGS (\\Seen) " + item + b")\r\n"


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("when", ["after NOOP", "during IDLE", "beside a FETCH answer"])
def test_unsolicited_fetch_data_is_reduced_to_flags(carrier: str, when: str) -> None:
    pushed = _pushed(CARRIERS[carrier])
    script = Script()
    if when == "after NOOP":
        script.before.append((rb"^NOOP", pushed))
        actions = lambda client, seen: seen.append(client.noop())  # noqa: E731
    elif when == "during IDLE":
        script.in_idle = pushed
        actions = _idle
    else:
        script.before.append((rb"FETCH", pushed))
        actions = lambda client, seen: seen.append(client.fetch("1", "(BODY.PEEK[])"))  # noqa: E731
    seen, _ = _through_engine([clean_message(1), clean_message(2)], script, actions)
    assert VIRUS not in seen
    assert b"2 (UID 2 FLAGS (\\Seen))" in seen  # what the server may say unasked still arrives


def test_a_fetch_response_without_a_number_ends_the_session_with_bye() -> None:
    script = Script(before=[(rb"^NOOP", b"* FETCH (UID 1 BODY[] " + literal(INFECTED) + b")\r\n")])
    seen, _ = _through_engine([clean_message(1)], script, lambda client, seen: seen.append(client.noop()))
    assert VIRUS not in seen
    assert b"without a message number" in seen  # a BYE saying why, not a dropped connection


@pytest.mark.parametrize("pushed", [
    b"* X-EVIL " + literal(INFECTED) + b"\r\n",
    b'* URLFETCH "imap://alice@127.0.0.1/INBOX/;uid=1" ' + literal(INFECTED) + b"\r\n",
    b"* 1 X-EVIL " + literal(INFECTED) + b"\r\n",
], ids=["unknown", "URLFETCH", "numbered unknown"])
def test_unknown_untagged_responses_are_dropped(pushed: bytes) -> None:
    script = Script(before=[(rb"^NOOP", pushed)])
    seen, _ = _through_engine([clean_message(1)], script, lambda client, seen: seen.append(client.noop()))
    assert VIRUS not in seen
    assert b"NOOP completed" in seen


# --- 1b. literals imaplib frames otherwise than a reader of the grammar ---------------------------

_INNER = b"\r\n* 1 FETCH (RFC822 " + literal(INFECTED) + b")\r\n* OK z"
_LIST = b'* LIST () "/" ' + literal(_INNER)
#: imaplib reads a literal after any untagged line ending in "{n}" (Lib/imaplib.py, _get_response):
#: here the LIST's head, after which it takes the FETCH inside the LIST's literal for a response
STATUS_LITERAL = b"* OK hi {%d}\r\n" % (len(_LIST) - len(_INNER)) + _LIST + b"\r\n"
FRAMINGS = {
    "after the FETCH list": b"* 1 FETCH (UID 1) " + literal(INFECTED) + b"\r\n",
    "in a status response": STATUS_LITERAL,
    "non-synchronising": b'* LIST () "/" {%d+}\r\n' % len(_INNER[2:]) + _INNER[2:] + b"\r\n",
}


def _noop_then_fetch(client: imaplib.IMAP4, seen: list[Any]) -> None:
    seen.append(client.noop())
    seen.append(client.fetch("1", "(RFC822)"))


@pytest.mark.parametrize("pushed", FRAMINGS)
def test_a_literal_clients_frame_otherwise_never_reaches_them(pushed: str) -> None:
    script = Script(before=[(rb"^NOOP", FRAMINGS[pushed])])
    seen, _ = _through_engine([clean_message(1)], script, _noop_then_fetch)
    assert VIRUS not in seen
    assert b"BYE" in seen  # the session ended, saying why


def test_a_greeting_ending_in_a_literal_marker_ends_the_session() -> None:
    async def scenario() -> bytes:
        async with ScriptedImapServer([clean_message(1)], Script(greeting=STATUS_LITERAL)) as server:
            async with filter_server(server.port) as (_, port):
                return await asyncio.to_thread(_greeting_seen, port)

    seen = run(scenario())
    assert VIRUS not in seen
    assert seen.startswith(b"* BYE")


def _greeting_seen(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


# --- 2. items the server adds to an answer the proxy renders, or relays ---------------------------

EXTRAS = {
    "RFC822": b"RFC822 " + literal(INFECTED),
    "RFC822.TEXT": b"RFC822.TEXT " + literal(INFECTED),
    "X-EVIL": b"X-EVIL " + literal(INFECTED),
}


@pytest.mark.parametrize("extra", EXTRAS)
def test_items_added_to_a_rendered_answer_are_never_echoed(extra: str) -> None:
    script = Script(fetch_extra=EXTRAS[extra])
    seen, _ = _through_engine([clean_message(1)], script,
                              lambda client, seen: seen.append(client.uid("FETCH", "1", "(BODY.PEEK[])")))
    assert VIRUS not in seen
    assert b"line 19 of message 1" in seen  # the scanned message itself is served


@pytest.mark.parametrize("extra", ["X-EVIL", "BODY unsectioned"])
@pytest.mark.parametrize("items", ["(FLAGS)", "(UID FLAGS INTERNALDATE)"])
def test_items_added_to_a_metadata_answer_are_dropped(extra: str, items: str) -> None:
    script = Script(fetch_extra={"X-EVIL": EXTRAS["X-EVIL"], "BODY unsectioned": CARRIERS["BODY unsectioned"]}[extra])
    seen, _ = _through_engine([clean_message(1)], script,
                              lambda client, seen: seen.append(client.fetch("1", items)))
    assert VIRUS not in seen
    assert b"FLAGS ()" in seen


STRUCTURES = {
    "ENVELOPE literal": b"ENVELOPE (NIL " + literal(INFECTED) + b" NIL NIL NIL NIL NIL NIL NIL NIL)",
    "ENVELOPE quoted": b'ENVELOPE (NIL "' + INFECTED.split(b"\r\n")[-3].replace(b"\\", b"\\\\")
                       + b'" NIL NIL NIL NIL NIL NIL NIL NIL)',
    "BODYSTRUCTURE": b'BODYSTRUCTURE ("text" "plain" NIL NIL ' + literal(INFECTED) + b' "7bit" 5 1 NIL NIL NIL NIL)',
}


@pytest.mark.parametrize("structure", STRUCTURES)
def test_structures_come_from_the_scanned_copy_not_the_server(structure: str) -> None:
    script = Script(fetch_extra=STRUCTURES[structure])
    seen, _ = _through_engine([clean_message(1)], script,
                              lambda client, seen: seen.append(client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")))
    assert VIRUS not in seen
    assert b'"clean 1"' in seen  # the subject of the message itself


# --- 4. a lie in RFC822.SIZE ---------------------------------------------------------------------


@pytest.mark.parametrize("items", ["(BODY.PEEK[])", "(RFC822)"])
def test_a_small_message_claimed_huge_is_scanned(items: str) -> None:
    # max-object-size 1 MB: a claim of 100 MB is far above what the engine holds and scans.
    script = Script(claimed_size=100_000_000)
    values = {EC + "threatsense.limits.max-object-size": "1MB"}
    seen, _ = _through_engine([INFECTED], script, lambda client, seen: seen.append(client.fetch("1", items)), values)
    assert VIRUS not in seen
    assert b"X-MailGuard-Result: infected" in seen


# --- 7. commands that fetch content by other names, and commands nobody knows --------------------


def test_fetch_preview_is_refused_and_never_reaches_the_server() -> None:
    seen, server = _through_engine([INFECTED], Script(),
                                   lambda client, seen: seen.append(client.fetch("1", "(PREVIEW)")))
    assert VIRUS not in seen
    assert not server.reached(b"PREVIEW")


def test_urlfetch_is_refused_and_never_reaches_the_server() -> None:
    url = b'"imap://alice@127.0.0.1/INBOX/;uid=1;urlauth=anonymous:internal:0123456789abcdef"'
    script = Script(answers=[(rb"^URLFETCH", b"* URLFETCH " + url + b" " + literal(INFECTED)
                              + b"\r\n%(tag)s OK URLFETCH completed\r\n")])
    seen, server = _through_engine(
        [INFECTED], script, lambda client, seen: seen.append(client._simple_command("URLFETCH", url.decode())))
    assert VIRUS not in seen
    assert not server.reached(b"URLFETCH")


def test_a_command_the_proxy_does_not_know_never_reaches_the_server() -> None:
    seen, server = _through_engine([clean_message(1)], Script(),
                                   lambda client, seen: seen.append(client._simple_command("XYZZY")))
    assert b"not available through this proxy" in seen
    assert not server.reached(b"XYZZY")


# --- 8. a client line a server could split otherwise than the proxy -------------------------------


def _raw_session(port: int, line: bytes) -> bytes:
    """Log in with plain bytes, send ``line``, and read until the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"1 LOGIN alice secret\r\n")
        received = b""
        while b"1 OK" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        sock.sendall(line + b"2 LOGOUT\r\n")
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("line", [b"a NOOP\rb COMPRESS DEFLATE\r\n", b"a NOOP\0b COMPRESS DEFLATE\r\n"],
                         ids=["bare CR", "NUL"])
def test_a_bare_cr_or_nul_in_a_command_line_never_reaches_the_server(line: bytes) -> None:
    # a server that ends a line at a bare CR (or a C string at NUL) would read a second
    # command the proxy never judged (RFC 9051 §9: CRLF ends a line, NUL is no CHAR)
    async def scenario() -> tuple[bytes, ScriptedImapServer]:
        async with ScriptedImapServer([clean_message(1)], Script()) as server:
            async with filter_server(server.port) as (_, port):
                return await asyncio.to_thread(_raw_session, port, line), server

    seen, server = run(scenario())
    assert b"BYE" in seen
    assert not server.reached(b"COMPRESS") and not server.reached(b"NOOP")
