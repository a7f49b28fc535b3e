from __future__ import annotations

import base64
import binascii

import pytest

from mailguard.scan.decoders import (
    base64_decodings,
    decodings_for,
    inline_blocks,
    quoted_printable_decoding,
)
from tests.scan.encoders import b64_lines, binhex, uuencode, yenc
from tests.scan.reference_detector import EICAR

ALL_BYTES = bytes(range(256)) * 3


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 67, 68, 69, 1000])
def test_base64_round_trip_every_length(length: int) -> None:
    data = ALL_BYTES[:length]
    assert base64_decodings(b64_lines(data)) == [data]


def test_base64_ignores_bytes_outside_the_alphabet() -> None:
    # RFC 2045 §6.8
    text = base64.b64encode(EICAR)
    noisy = b"#".join(text[i:i + 3] for i in range(0, len(text), 3)) + b"\x0b\r\n:%"
    assert base64_decodings(noisy)[0] == EICAR


def test_base64_without_padding_or_with_a_dangling_character() -> None:
    assert base64_decodings(b"QUJD\nRA") == [b"ABCD"]
    assert base64_decodings(b"QUJDR") == [b"ABC"]


def test_base64_union_of_readings_when_padding_is_mid_stream() -> None:
    first = base64.b64encode(b"hi")           # "aGk=" ends in padding
    second = base64.b64encode(b"second file")
    views = base64_decodings(first + b"\r\n" + second)
    assert views[0] == b"hi"                  # stop at the first padding
    assert b"hi" + b"second file" in views    # restart after each padding
    assert b"second file" in views            # what follows the padding, on its own
    assert len(views) == len(set(views))


def test_base64_trailing_padding_only_gives_one_reading() -> None:
    assert len(base64_decodings(base64.b64encode(b"x") + b"\r\n==\r\n")) == 1


def test_quoted_printable_is_lenient() -> None:
    assert quoted_printable_decoding(b"a=3Db=\r\nc =ZZ") == b"a=bc =ZZ"


@pytest.mark.parametrize("encoding", ["7bit", "8bit", "binary", "x-unknown"])
def test_identity_encodings_keep_bytes(encoding: str) -> None:
    assert decodings_for(encoding, memoryview(ALL_BYTES)) == [ALL_BYTES]


@pytest.mark.parametrize("nl", [b"\n", b"\r\n"])
def test_uuencode_block_in_text(nl: bytes) -> None:
    text = b"hello" + nl + uuencode(ALL_BYTES, "file name.bin", nl) + b"bye" + nl
    [block] = inline_blocks(text, 10**6)
    assert (block.encoding, block.name, block.data) == ("uuencode", "file name.bin", ALL_BYTES)


def test_uuencode_tolerates_trailing_garbage_on_lines() -> None:
    encoded = uuencode(EICAR, "e.com").splitlines()
    dirty = b"\n".join(line + b"  xx" if line.startswith(b"M") else line for line in encoded)
    assert inline_blocks(dirty, 10**6)[0].data == EICAR


def test_begin_base64_block() -> None:
    text = b"begin-base64 600 a.bin\n" + b64_lines(ALL_BYTES, nl=b"\n") + b"====\n"
    [block] = inline_blocks(text, 10**6)
    assert (block.encoding, block.data) == ("base64", ALL_BYTES)


def test_yenc_block_escapes_critical_bytes() -> None:
    [block] = inline_blocks(b"intro\r\n" + yenc(ALL_BYTES, "all.bin", line=64), 10**6)
    assert (block.encoding, block.name, block.data) == ("yenc", "all.bin", ALL_BYTES)


def test_binhex_block_with_run_length_escape() -> None:
    data = b"\x90" * 3 + ALL_BYTES + b"tail"
    [block] = inline_blocks(b"see:\r\n" + binhex(data, "mac.bin"), 10**6)
    assert (block.encoding, block.name, block.data) == ("binhex", "mac.bin", data)


def test_binhex_run_length_expansion_is_capped() -> None:
    # One byte repeated 255 times per 3 input bytes: a small bomb.
    header = b"\x01a\x00" + b"BINAmgrd\x00\x00" + (10**6).to_bytes(4, "big") + bytes(4) + b"\0\0"
    stream = header + (b"A\x90\xff") * 5000
    text = base64.b64encode(stream).rstrip(b"=").translate(
        bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                        b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"))
    blocks = inline_blocks(b"(This file must be converted with BinHex 4.0)\n:" + text + b":\n", 4096)
    assert blocks and all(len(b.data) <= 4096 for b in blocks)


def test_plain_text_has_no_blocks() -> None:
    assert inline_blocks(b"begin the meeting at 9\n=ybegin is how yEnc starts\n", 10**6) == []


def test_uu_decoder_matches_binascii_reference() -> None:
    line = binascii.b2a_uu(b"exactly forty-five bytes long, not one more!!")
    assert inline_blocks(b"begin 644 x\n" + line + b"`\nend\n", 100)[0].data == binascii.a2b_uu(line)


def test_simd_backend_agrees_with_binascii(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailguard.scan import decoders

    if decoders._simd_b64decode is None:
        pytest.skip("pybase64 (the 'fast' extra) not installed")
    samples = [b64_lines(ALL_BYTES[:n]) + tail for n in (0, 1, 2, 3, 68, 700)
               for tail in (b"", b"QQ", b"Q", b"==QUJD", b"#\r\n")]
    fast = [base64_decodings(s) for s in samples]
    monkeypatch.setattr(decoders, "_simd_b64decode", None)
    assert fast == [base64_decodings(s) for s in samples]
