"""Hypothesis fuzzing: arbitrary and mutated messages through the walk, the decoders and the Engine.

Nothing may escape (``scan`` turns our own bugs into ``engine-error``, so the property
is that no ``engine-error`` appears), the walk stays inside the buffer, and every example
finishes in bounded time (hypothesis' deadline).
"""

from __future__ import annotations

import base64
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailguard.scan.decoders import base64_decodings, decodings_for, inline_blocks
from mailguard.scan.engine import Engine
from mailguard.scan.mime import parse_message
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Reason, Status
from tests.scan.corpus import CASES
from tests.scan.reference_detector import ReferenceDetector

FUZZ = settings(max_examples=int(__import__("os").environ.get("MAILGUARD_FUZZ_EXAMPLES", "150")), deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
SEEDS = [CASES[name].build() for name in sorted(CASES)
         if "clamav-testfiles" not in CASES[name].needs and name != "clean_huge_attachment"]
TOKENS = [b"\r\n", b"\n", b"\r", b"--", b"=_mg_outer", b"Content-Type: multipart/mixed; boundary=x\r\n",
          b"--x\r\n", b"--x--", b"=", b"=?utf-8?B?", b"begin 644 a\n", b"=ybegin name=a\n", b"\r\n\r\n",
          b"Content-Transfer-Encoding: base64\r\n", b"message/rfc822", b"\x00", b"\xff", b";", b'"', b"*0*="]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        token = draw(st.sampled_from(TOKENS) | st.binary(max_size=8))
        if kind == "insert":
            raw[pos:pos] = token
        elif kind == "delete":
            del raw[pos:pos + draw(st.integers(1, 40))]
        else:
            raw[pos:pos + len(token)] = token
    return bytes(raw)


def _no_engine_error(verdict) -> None:
    assert not [i for i in verdict.incomplete if i.reason is Reason.ENGINE_ERROR], verdict.incomplete


ENGINE = Engine(Policy(), [ReferenceDetector()])


@FUZZ
@given(st.binary(max_size=4096))
def test_walk_arbitrary_bytes(raw: bytes) -> None:
    tree = parse_message(raw)
    for part in tree.walk():
        if not part.detached:
            assert 0 <= part.header_start <= part.header_end <= part.body_start <= part.body_end <= len(raw)


@FUZZ
@given(mutated_messages())
def test_walk_mutated_messages(raw: bytes) -> None:
    for part in parse_message(raw).walk():
        assert part.body_start <= part.body_end <= len(part.source)
        assert part.section is not None


@FUZZ
@given(mutated_messages())
def test_engine_scan_and_apply_mutated_messages(raw: bytes) -> None:
    verdict = ENGINE.scan(raw)
    _no_engine_error(verdict)
    out = ENGINE.apply(raw, verdict)
    if verdict.status is Status.INFECTED:
        assert ENGINE.scan(out).status is not Status.INFECTED
    elif verdict.status is Status.CLEAN:
        assert out == raw
    else:  # unscanned: passed (default on-scan-error) and tagged
        assert b'X-MailGuard-Result: unscanned; reason="' in out


@FUZZ
@given(st.binary(max_size=2048))
def test_engine_scan_arbitrary_bytes(raw: bytes) -> None:
    _no_engine_error(ENGINE.scan(raw))


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["base64", "quoted-printable", "7bit", "x-uuencode"]))
def test_decoders_accept_anything(data: bytes, encoding: str) -> None:
    for decoded in decodings_for(encoding, data):
        assert isinstance(decoded, bytes)
    for block in inline_blocks(data, 4096):
        assert len(block.data) <= max(4096, len(data))


@FUZZ
@given(st.binary(max_size=512), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(b"#:.% \t\r\n\x0b-_")), max_size=20))
def test_base64_garbage_never_changes_the_first_reading(data: bytes, noise: list[tuple[int, int]]) -> None:
    text = bytearray(base64.b64encode(data))
    for pos, byte in noise:
        text.insert(pos % (len(text) + 1), byte)
    assert base64_decodings(bytes(text))[0] == data


@FUZZ
@given(st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")), st.integers(0, 3))
def test_inline_markers_in_text_do_not_break(text: bytes, which: int) -> None:
    marker = [b"begin 644 x\n", b"=ybegin name=x\n", b"(This file must be converted with BinHex 4.0)\n:", b"begin-base64 644 y\n"][which]
    inline_blocks(marker + text, 1024)


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=40))
def test_simd_and_binascii_base64_agree(data: bytes, noise: bytes) -> None:
    from mailguard.scan import decoders

    if decoders._simd_b64decode is None:
        return
    text = base64.encodebytes(data) + noise
    fast = base64_decodings(text)
    simd, decoders._simd_b64decode = decoders._simd_b64decode, None
    try:
        assert fast == base64_decodings(text)
    finally:
        decoders._simd_b64decode = simd
