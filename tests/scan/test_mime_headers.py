from __future__ import annotations

from mailguard.scan.mime_headers import (
    decode_encoded_words,
    describe_entity,
    parameter_values,
    parse_header_block,
    parse_parameterized,
)


def _fields(raw: bytes):
    return parse_header_block(raw, 0, len(raw), b"\n").fields


def test_header_block_offsets_and_unfolding() -> None:
    raw = b"Subject: one\r\n two\r\nX-A:  b \r\n\r\nbody"
    block = parse_header_block(raw, 0, len(raw), b"\n")
    assert [(f.name, f.value) for f in block.fields] == [("subject", b"one two"), ("x-a", b"b")]
    assert raw[block.fields[0].start:block.fields[0].end] == b"Subject: one\r\n two\r\n"
    assert (block.end, block.body_start) == (raw.index(b"\r\n\r\n") + 2, raw.index(b"body"))


def test_non_header_line_starts_the_body() -> None:
    raw = b"Content-Type: text/plain\nthis is not a header\n\nmore"
    block = parse_header_block(raw, 0, len(raw), b"\n")
    assert len(block.fields) == 1 and raw[block.body_start:].startswith(b"this is not")


def test_cr_only_header_block() -> None:
    raw = b"A: 1\rB: 2\r\rbody"
    block = parse_header_block(raw, 0, len(raw), b"\r")
    assert [f.name for f in block.fields] == ["a", "b"] and raw[block.body_start:] == b"body"


def test_field_hidden_behind_bare_cr_is_recovered() -> None:
    block = parse_header_block(b"X-Note: hi\rContent-Type: text/html\n\n", 0, 36, b"\n")
    assert block.bare_cr
    assert [(f.name, f.value, f.hidden) for f in block.fields] == [
        ("x-note", b"hi", False), ("content-type", b"text/html", True)]


def test_space_before_colon_is_a_field() -> None:
    assert _fields(b"Content-type : text/html\n\n")[0].name == "content-type"


def test_parameters_quotes_comments_and_duplicates() -> None:
    head, params = parse_parameterized('Multipart/Mixed; boundary="a;b\\"c" (note); boundary=x; charset=(c)utf-8')
    assert head == "multipart/mixed"
    assert params == [("boundary", 'a;b"c'), ("boundary", "x"), ("charset", "utf-8")]


def test_rfc2231_continuations_out_of_order_with_charset() -> None:
    _, params = parse_parameterized("x; name*1=\".exe\"; name*0*=utf-8'en'%E2%82%ACvil")
    assert parameter_values(params, "name") == ["€vil.exe"]


def test_rfc2231_extended_and_plain_both_kept() -> None:
    _, params = parse_parameterized("x; filename=a.png; filename*=UTF-16LE''%62%00%2E%00%65%00%78%00%65%00")
    assert parameter_values(params, "filename") == ["a.png", "b.exe"]


def test_rfc2047_decoded_even_inside_quotes() -> None:
    assert decode_encoded_words("=?utf-8?B?ZXZpbA==?= =?utf-8?Q?=2Eexe?=") == "evil.exe"
    assert decode_encoded_words("=?x-unknown?Q?a_b?=") == "a b"


def test_every_derivable_filename() -> None:
    fields = _fields(b'Content-Type: application/octet-stream; name="inv.pdf"\n'
                     b'Content-Disposition: attachment; filename="=?us-ascii?Q?inv=2Eexe?="\n'
                     b"Content-Disposition: attachment; filename=file.ex(comment)e\n\n")
    names = describe_entity(fields).filenames
    assert {"inv.pdf", "inv.exe", "file.exe", "file.ex(comment)e"} <= set(names)


def test_every_boundary_and_encoding_reading() -> None:
    fields = _fields(b'Content-Type: multipart/mixed; boundary="one"\nContent-Type: multipart/mixed; boundary=two\n'
                     b"Content-Transfer-Encoding: base64\nContent-Transfer-Encoding: Quoted-Printable (x)\n\n")
    info = describe_entity(fields)
    assert info.boundaries == ("one", "two")
    assert info.encodings == ("base64", "quoted-printable")
    assert info.content_type_fields == 2
