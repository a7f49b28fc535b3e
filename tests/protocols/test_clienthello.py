"""The SNI parser for transparent mode: real ClientHellos from the ssl module, split records,
truncation, and bytes that are not TLS."""

from __future__ import annotations

import ssl

import pytest

from mailguard.protocols.clienthello import parse_client_hello


def _hello(server_hostname: str | None) -> bytes:
    context = ssl.create_default_context()
    if server_hostname is None or server_hostname[:1].isdigit():
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_server_name_of_a_real_client_hello() -> None:
    data = _hello("Mail.Example.org")
    hello = parse_client_hello(data)
    assert hello.complete and hello.valid
    assert hello.server_name == "mail.example.org"


def test_no_sni_and_an_ip_literal_give_no_name() -> None:
    for hostname in (None, "10.0.0.1"):
        hello = parse_client_hello(_hello(hostname))
        assert hello.complete and hello.valid and hello.server_name is None


def test_every_prefix_is_incomplete_until_the_whole_hello_arrived() -> None:
    data = _hello("imap.example.net")
    for cut in range(len(data)):
        hello = parse_client_hello(data[:cut])
        assert not hello.complete and hello.valid, cut
    assert parse_client_hello(data + b"\x17\x03\x03").server_name == "imap.example.net"


def test_a_hello_split_over_several_records() -> None:
    data = _hello("pop.example.com")
    body = data[5:]
    pieces = [body[:3], body[3:50], body[50:]]
    split = b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in pieces)
    assert parse_client_hello(split).server_name == "pop.example.com"
    assert not parse_client_hello(split[:-1]).complete


@pytest.mark.parametrize("data", [b"+OK POP3 ready\r\n", b"a1 CAPABILITY\r\n", b"GET / HTTP/1.0\r\n",
                                  b"\x16\x02\x00\x00\x10", b"\x17\x03\x03\x00\x10" + bytes(16),
                                  b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"])
def test_bytes_that_are_not_a_client_hello_are_invalid(data: bytes) -> None:
    hello = parse_client_hello(data)
    assert hello.complete and not hello.valid and hello.server_name is None


def test_an_oversized_or_malformed_hello_is_invalid_not_an_exception() -> None:
    assert not parse_client_hello(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff").valid
    data = bytearray(_hello("x.example"))
    # cipher-suite length pointing past the end of the message
    session_len = data[5 + 4 + 34]
    at = 5 + 4 + 35 + session_len
    data[at:at + 2] = b"\xff\xff"
    assert not parse_client_hello(bytes(data)).valid
    for name in (b"bad name", b"\xc3\xa9.example", b""):
        ext = (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name
        from mailguard.protocols.clienthello import _server_name
        assert _server_name(ext) is None
