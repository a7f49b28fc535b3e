"""Greeting recognition on ports in no protocol's list, as lenient as clients: a "+" line is
POP3, "*" with OK / PREAUTH / BYE is IMAP, anything else is unrecognised."""

from __future__ import annotations

import pytest

from mailguard.protocols.sniff import Greeting, GreetingSniffer, classify_greeting


@pytest.mark.parametrize(("greeting", "kind"), [
    (b"+OK Dovecot ready.\r\n", Greeting.POP3),
    (b"+OK\r\n", Greeting.POP3),
    (b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n", Greeting.POP3),
    (b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n", Greeting.IMAP),
    (b"* ok imap ready\r\n", Greeting.IMAP),
    (b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n", Greeting.IMAP),
    (b"* BYE Autologout; idle for too long\r\n", Greeting.IMAP),
    (b"220 smtp.example.com ESMTP\r\n", Greeting.OPAQUE),
    # what poplib / imaplib accept as a greeting is recognised (the handler checks the rest)
    (b"+OK<1.2@x>\r\n", Greeting.POP3),
    (b"+ok ready\r\n", Greeting.POP3),
    (b"+OKAY\r\n", Greeting.POP3),
    (b"+\r\n", Greeting.POP3),
    (b"* OK[CAPABILITY IMAP4rev1] hi\r\n", Greeting.IMAP),
    (b"*  ok\r\n", Greeting.IMAP),
    (b"* OKAY\r\n", Greeting.IMAP),
    (b"* NO go away\r\n", Greeting.OPAQUE),
    (b"-ERR go away\r\n", Greeting.OPAQUE),
    (b"OK\r\n", Greeting.OPAQUE),
    (b"\x16\x03\x01\x02\x00", Greeting.OPAQUE),
])
def test_classify(greeting: bytes, kind: Greeting) -> None:
    assert classify_greeting(greeting) is kind
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(greeting) is kind
    assert sniffer.buffered == greeting


def test_needs_the_whole_first_line() -> None:
    sniffer = GreetingSniffer()
    for byte in b"+OK hi":
        assert sniffer.receive_server(bytes([byte])) is None
    assert sniffer.receive_server(b"\r\n") is Greeting.POP3
    assert sniffer.buffered == b"+OK hi\r\n"


def test_mismatch_is_decided_without_waiting_for_a_line() -> None:
    assert GreetingSniffer().receive_server(b"SSH-2.0-") is Greeting.OPAQUE
    assert GreetingSniffer().receive_server(b"* NO ") is Greeting.OPAQUE
    assert GreetingSniffer().receive_server(b"* ") is None
    assert GreetingSniffer().receive_server(b"* pre") is None
    assert GreetingSniffer().receive_server(b"+OK<") is None


def test_over_long_first_line_is_opaque() -> None:
    sniffer = GreetingSniffer(max_line=64)
    assert sniffer.receive_server(b"+OK " + b"x" * 100) is Greeting.OPAQUE


def test_client_speaking_first_is_opaque() -> None:
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(b"+OK") is None
    assert sniffer.client_spoke() is Greeting.OPAQUE
    # a decision, once taken, stays
    assert sniffer.receive_server(b" ready\r\n") is Greeting.OPAQUE
    assert sniffer.buffered == b"+OK ready\r\n"


def test_server_closing_or_silent_is_opaque() -> None:
    assert GreetingSniffer().receive_server(b"") is Greeting.OPAQUE
    assert GreetingSniffer().timed_out() is Greeting.OPAQUE


def test_recognised_greeting_survives_client_data_afterwards() -> None:
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(b"+OK\r\n") is Greeting.POP3
    assert sniffer.client_spoke() is Greeting.POP3


def test_the_reason_for_an_opaque_verdict_is_kept() -> None:
    cases = [
        (lambda s: s.timed_out(), "timeout"),
        (lambda s: s.client_spoke(), "client"),
        (lambda s: s.receive_server(b""), "closed"),
        (lambda s: s.receive_server(b"220 smtp ready\r\n"), "greeting"),
    ]
    for act, reason in cases:
        sniffer = GreetingSniffer()
        assert act(sniffer) is Greeting.OPAQUE
        assert sniffer.reason == reason
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(b"+OK\r\n") is Greeting.POP3 and sniffer.reason is None
    assert sniffer.timed_out() is Greeting.POP3 and sniffer.reason is None
