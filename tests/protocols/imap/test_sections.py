import pytest

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.sections import (
    Section,
    apply_partial,
    cut_binary,
    cut_section,
    parse_section,
)
from mailguard.protocols.imap.structure import parse_message
from tests.protocols.imap.messages import EICAR, NESTED, SIMPLE


def cut(data: bytes, spec: bytes) -> bytes | None:
    return cut_section(data, parse_message(data), parse_section(spec))


def test_parse_section() -> None:
    assert parse_section(b"") == Section((), "")
    assert parse_section(b"2.1.MIME") == Section((2, 1), "MIME")
    assert parse_section(b"header.fields.not (From \"Date\")") == Section((), "HEADER.FIELDS.NOT", (b"from", b"date"))
    with pytest.raises(RemoteProtocolError):
        parse_section(b"MIME")
    with pytest.raises(RemoteProtocolError):
        parse_section(b"0")


def test_whole_header_text_of_a_simple_message() -> None:
    header, _, text = SIMPLE.partition(b"\r\n\r\n")
    assert cut(SIMPLE, b"") == SIMPLE
    assert cut(SIMPLE, b"HEADER") == header + b"\r\n\r\n"
    assert cut(SIMPLE, b"TEXT") == text
    assert cut(SIMPLE, b"1") == text  # a non-multipart message has a part 1: its body
    assert cut(SIMPLE, b"2") is None
    assert cut(SIMPLE, b"1.1") is None


def test_parts_of_a_nested_message() -> None:
    assert cut(NESTED, b"1") == b"first part"
    assert cut(NESTED, b"1.MIME") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    inner = cut(NESTED, b"2")
    assert inner.startswith(b"From: inner@") and inner.endswith(b"--inner--\r\n")
    assert cut(NESTED, b"2.HEADER") == (
        b"From: inner@example.com\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    )
    assert cut(NESTED, b"2.1") == b"inner text"
    assert cut(NESTED, b"2.2") == b"<p>inner</p>"
    assert cut(NESTED, b"2.2.MIME") == b"Content-Type: text/html\r\n\r\n"
    assert cut(NESTED, b"2.TEXT").startswith(b"--inner\r\n")
    assert cut(NESTED, b"1.HEADER") is None  # not an attached message
    assert cut(NESTED, b"3").startswith(b"WDVP")
    assert cut(NESTED, b"4") is None


def test_header_fields_keep_folding_and_order_and_end_with_the_blank_line() -> None:
    assert cut(NESTED, b"HEADER.FIELDS (x-priority FROM)") == (
        b"From: a@example.com\r\nX-Priority: 3\r\n  (folded)\r\n\r\n"
    )
    assert cut(NESTED, b"HEADER.FIELDS (no-such)") == b"\r\n"
    not_fields = cut(NESTED, b"HEADER.FIELDS.NOT (Content-Type MIME-Version X-Priority)")
    assert not_fields == b"From: a@example.com\r\nSubject: nested\r\n\r\n"


def test_binary_decodes_the_transfer_encoding() -> None:
    root = parse_message(NESTED)
    assert cut_binary(NESTED, root, parse_section(b"3")) == EICAR
    assert cut_binary(NESTED, root, parse_section(b"1")) == b"first part"
    assert cut_binary(NESTED, root, parse_section(b"")) == NESTED


@pytest.mark.parametrize("size", [0, 1, 1499, 1500, 65535, 65536, 65537, 393216 + 1])
@pytest.mark.parametrize("chunk", [65536, 393216, 1000])
def test_chunks_of_partials_join_to_the_whole(size: int, chunk: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    joined = b"".join(apply_partial(data, offset, chunk) for offset in range(0, size + chunk, chunk))
    assert joined == data
    assert apply_partial(data, size, chunk) == b""
    assert apply_partial(data, 0, 2048) == data[:2048]


def _outer(inner: bytes) -> bytes:
    return (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n" + inner
        + b"\r\n--outer\r\nContent-Type: text/plain\r\n\r\nlast\r\n--outer--\r\n"
    )


# What Dovecot 2.3 answers for BODY[1] of each (probed once against the real server): the CRLF
# before a delimiter is not part of a part, except after an inner close delimiter.
@pytest.mark.parametrize(
    "inner, expected",
    [
        (b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--inner--",
         b"--inner\r\n\r\nx\r\n--inner--\r\n"),
        (b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--inner--\r\nepi",
         b"--inner\r\n\r\nx\r\n--inner--\r\nepi"),
        (b"Content-Type: message/rfc822\r\n\r\nSubject: s\r\n\r\nbody", b"Subject: s\r\n\r\nbody"),
        (b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n"
         b"--inner\r\n\r\nx\r\n--inner--",
         b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--inner--\r\n"),
        (b"Content-Type: text/plain\r\n\r\nbody\r\n", b"body\r\n"),
    ],
)
def test_part_ends_like_dovecot_cuts_them(inner: bytes, expected: bytes) -> None:
    message = _outer(inner)
    assert cut(message, b"1") == expected
    assert cut(message, b"2") == b"last"
