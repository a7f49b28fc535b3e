"""Greeting recognition on ports in no protocol's list, as lenient as clients: a "+" line is
POP3, "*" with OK / PREAUTH / BYE is IMAP, anything else is unrecognised."""

from __future__ import annotations

import pytest

from mailguard.protocols.sniff import GreetingSniffer, Kind, classify_greeting


@pytest.mark.parametrize(("greeting", "kind"), [
    (b"+OK Dovecot ready.\r\n", Kind.POP3),
    (b"+OK\r\n", Kind.POP3),
    (b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n", Kind.POP3),
    (b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n", Kind.IMAP),
    (b"* ok imap ready\r\n", Kind.IMAP),
    (b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n", Kind.IMAP),
    (b"* BYE Autologout; idle for too long\r\n", Kind.IMAP),
    (b"220 smtp.example.com ESMTP\r\n", Kind.OPAQUE),
    # what poplib / imaplib accept as a greeting is recognised (the handler checks the rest)
    (b"+OK<1.2@x>\r\n", Kind.POP3),
    (b"+ok ready\r\n", Kind.POP3),
    (b"+OKAY\r\n", Kind.POP3),
    (b"+\r\n", Kind.POP3),
    (b"* OK[CAPABILITY IMAP4rev1] hi\r\n", Kind.IMAP),
    (b"*  ok\r\n", Kind.IMAP),
    (b"* OKAY\r\n", Kind.IMAP),
    (b"* NO go away\r\n", Kind.OPAQUE),
    (b"-ERR go away\r\n", Kind.OPAQUE),
    (b"OK\r\n", Kind.OPAQUE),
    (b"\x16\x03\x01\x02\x00", Kind.OPAQUE),
])
def test_classify(greeting: bytes, kind: Kind) -> None:
    assert classify_greeting(greeting) is kind
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(greeting) is kind
    assert sniffer.buffered == greeting


def test_needs_the_whole_first_line() -> None:
    sniffer = GreetingSniffer()
    for byte in b"+OK hi":
        assert sniffer.receive_server(bytes([byte])) is None
    assert sniffer.receive_server(b"\r\n") is Kind.POP3
    assert sniffer.buffered == b"+OK hi\r\n"


def test_mismatch_is_decided_without_waiting_for_a_line() -> None:
    assert GreetingSniffer().receive_server(b"SSH-2.0-") is Kind.OPAQUE
    assert GreetingSniffer().receive_server(b"* NO ") is Kind.OPAQUE
    assert GreetingSniffer().receive_server(b"* ") is None
    assert GreetingSniffer().receive_server(b"* pre") is None
    assert GreetingSniffer().receive_server(b"+OK<") is None


def test_over_long_first_line_is_opaque() -> None:
    sniffer = GreetingSniffer(max_line=64)
    assert sniffer.receive_server(b"+OK " + b"x" * 100) is Kind.OPAQUE


def test_client_speaking_first_is_opaque() -> None:
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(b"+OK") is None
    assert sniffer.client_spoke() is Kind.OPAQUE
    # a decision, once taken, stays
    assert sniffer.receive_server(b" ready\r\n") is Kind.OPAQUE
    assert sniffer.buffered == b"+OK ready\r\n"


def test_server_closing_or_silent_is_opaque() -> None:
    assert GreetingSniffer().receive_server(b"") is Kind.OPAQUE
    assert GreetingSniffer().timed_out() is Kind.OPAQUE


def test_recognised_greeting_survives_client_data_afterwards() -> None:
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(b"+OK\r\n") is Kind.POP3
    assert sniffer.client_spoke() is Kind.POP3


def test_the_reason_for_an_opaque_verdict_is_kept() -> None:
    cases = [
        (lambda s: s.timed_out(), "timeout"),
        (lambda s: s.client_spoke(), "client"),
        (lambda s: s.receive_server(b""), "closed"),
        (lambda s: s.receive_server(b"220 smtp ready\r\n"), "greeting"),
    ]
    for act, reason in cases:
        sniffer = GreetingSniffer()
        assert act(sniffer) is Kind.OPAQUE
        assert sniffer.reason == reason
    sniffer = GreetingSniffer()
    assert sniffer.receive_server(b"+OK\r\n") is Kind.POP3 and sniffer.reason is None
    assert sniffer.timed_out() is Kind.POP3 and sniffer.reason is None
