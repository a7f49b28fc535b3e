"""Anchored one-piece body signatures checked in place (ndb_anchored) against YARA and ``re``.

The fast check replaces YARA for these signatures, so it must say what YARA says on
every buffer: random signatures over a small alphabet, random offsets and windows,
random short buffers (so that hits, near misses and offsets past either end all occur).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailguard.scan.detectors import ndb
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.clamav_db import ClamavDbDetector
from mailguard.scan.detectors.ndb_anchored import AnchoredMatcher, handles, literal_of
from mailguard.scan.detectors.ndb_re import BodyMatcher

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DIFFERENTIAL = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Tokens YARA can say (so the signature goes to YARA, or in place), each with a way to draw
# bytes it matches: a signature comes with a sample, planted at or near its offset, so that
# hits are as common as misses. Bytes are mostly from "ABC" so that chance hits happen too.
_ALPHABET = b"ABCMZ"


def _sample_for(draw: st.DrawFn, token: str) -> bytes:
    any_byte = st.integers(0, 255).map(lambda b: bytes((b,))) | st.sampled_from([b"A", b"B", b"C"])
    if token == "??":
        return draw(any_byte)
    if token.startswith("!("):
        return draw(any_byte)  # sometimes the excluded byte: a near miss
    if token.startswith("("):
        return bytes.fromhex(draw(st.sampled_from(token[1:-1].split("|"))))
    if token[0] in "{[":
        low, _, high = token[1:-1].partition("-")
        low_n, high_n = int(low or 0), int(high or low)
        return b"." * draw(st.integers(max(0, low_n - 1), high_n + 1))  # sometimes out of range
    if "?" in token:
        digit = token.replace("?", "")
        value = draw(st.integers(0, 15))
        return bytes.fromhex(f"{value:x}{digit}" if token[0] == "?" else f"{digit}{value:x}")
    return bytes.fromhex(token)


_BYTES = ["41", "42", "43", "4d", "5a"]
_OTHERS = ["??", "4?", "?1", "?2", "(41|42)", "(41|4242)", "(4343|42)", "!(41)", "!(42)",
           "{1}", "{0-2}", "{1-3}", "{-2}", "[1-2]", "[0-3]"]


@st.composite
def anchored_cases(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    """An anchored one-piece signature and buffers to try it on."""
    tokens = [draw(st.sampled_from(_BYTES))]
    tokens += draw(st.lists(st.sampled_from(_BYTES + _OTHERS), max_size=4))
    tokens.append(draw(st.sampled_from(_BYTES)))  # a signature may not end with a gap
    base = draw(st.integers(0, 12))
    window = draw(st.sampled_from([0, 0, draw(st.integers(1, 8))]))
    from_end = draw(st.booleans())
    offset = (f"EOF-{base}" if from_end else str(base)) + (f",{window}" if window else "")
    target = draw(st.sampled_from(["0", "0", "0", "1"]))  # 1: PE files only (start with MZ)
    line = f"Gen.Sig:{target}:{offset}:{''.join(tokens)}"
    noise = st.binary(max_size=16).map(lambda b: bytes(_ALPHABET[c % 5] for c in b))
    datas = []
    for _ in range(draw(st.integers(1, 6))):
        sample = b"".join(_sample_for(draw, token) for token in tokens)
        shift = draw(st.integers(-1, window + 1))  # in the window, or one byte outside it
        if from_end:
            tail = max(0, base - len(sample) - shift)
            data = draw(noise) + sample + draw(st.binary(min_size=tail, max_size=tail))
        else:
            data = draw(st.binary(min_size=max(0, base + shift), max_size=max(0, base + shift))) + sample + draw(noise)
        if draw(st.booleans()) and target == "1":
            data = b"MZ" + data[2:]
        datas.append(data)
    datas += draw(st.lists(noise | st.binary(max_size=24), max_size=3))
    return line, datas


def _yara_only(signature: ndb.BodySignature):
    from mailguard.scan.detectors.ndb_yara import YaraBodyMatcher

    matcher = YaraBodyMatcher([signature], timeout=10, anchored_in_place=False)
    assert [s.name for s in matcher.signatures] == [signature.name]  # really run by YARA
    return matcher


@given(anchored_cases())
@DIFFERENTIAL
def test_in_place_check_agrees_with_yara(case):
    line, datas = case
    pytest.importorskip("yara")
    signature = ndb.parse_line(line)
    assert handles(signature) and signature.yara_hex is not None
    fast, slow = AnchoredMatcher([signature]), _yara_only(signature)
    for data in datas:
        assert fast.match(data) == slow.match(data), (line, data)


@given(anchored_cases())
@DIFFERENTIAL
def test_in_place_check_agrees_with_re_inside_the_file(case):
    """Where the window lies inside the file, the ``re`` engine's reading is the same too.

    (Before the file, ``re`` finds nothing, YARA and the in-place check keep what is inside.)
    """
    line, datas = case
    signature = ndb.parse_line(line)
    fast, slow = AnchoredMatcher([signature]), BodyMatcher([signature])
    for data in datas:
        first = len(data) - signature.offset if signature.anchor == "eof" else signature.offset
        if first >= 0:
            assert fast.match(data) == slow.match(data), (line, data)


@given(st.binary(min_size=1, max_size=6), st.integers(0, 6), st.integers(0, 4), st.booleans(),
       st.lists(st.binary(max_size=16), min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_plain_bytes_take_the_literal_path_and_agree_with_the_pattern(literal, base, window, from_end, datas):
    where = f"EOF-{base}" if from_end else str(base)
    line = f"Lit:0:{where}{f',{window}' if window else ''}:{literal.hex()}"
    signature = ndb.parse_line(line)
    assert literal_of(signature) == literal
    # The same signature written so that it is not plain bytes: the regex path.
    group = re.compile(b"(?:" + signature.pieces[0].pattern.pattern + b")", re.DOTALL)
    patterned = dataclasses.replace(signature, pieces=(dataclasses.replace(signature.pieces[0], pattern=group),))
    assert literal_of(patterned) is None
    fast, regex = AnchoredMatcher([signature]), AnchoredMatcher([patterned])
    for data in datas + [data + literal for data in datas] + [literal + data for data in datas]:
        assert fast.match(data) == regex.match(data), (line, data)


def test_literal_of():
    assert literal_of(ndb.parse_line("A:0:0:41424344")) == b"ABCD"
    assert literal_of(ndb.parse_line("A:0:0:41??44")) is None
    assert literal_of(ndb.parse_line("A:0:0:41(42|43)")) is None
    assert literal_of(ndb.parse_line("A:0:0:5c785c")) == b"\\x\\"  # a backslash in the data is still a byte


def test_only_anchored_one_piece_signatures_are_handled():
    assert handles(ndb.parse_line("A:0:0:4142"))
    assert handles(ndb.parse_line("A:0:EOF-3,2:41{1-2}42"))
    assert not handles(ndb.parse_line("A:0:*:4142"))
    assert not handles(ndb.parse_line("A:0:0:41*42"))  # a later piece may sit anywhere
    with pytest.raises(ValueError):
        AnchoredMatcher([ndb.parse_line("A:0:0:41*42")])


@pytest.mark.parametrize("use_yara", [None, False])
def test_eicar_at_offset_zero_without_yara_scanning(tmp_path, use_yara):
    """The bench's database: one signature at offset 0. YARA is not consulted at all."""
    if use_yara is None:
        pytest.importorskip("yara")
    database = tmp_path / "eicar.ndb"
    database.write_text(f"Eicar.At.Start:0:0:{EICAR.hex()}\nEicar.At.End:0:EOF-{len(EICAR)}:{EICAR.hex()}\n")
    detector = ClamavDbDetector.from_paths([str(database)], use_yara=use_yara)
    if use_yara is None:
        assert detector.engines == {"yara": 0, "in place": 2, "re": 0}
        assert detector._yara is not None and detector._yara._rules is None
    found = lambda data: [f.name for f in detector.scan(ScanObject(data, "1"))]  # noqa: E731
    assert found(EICAR) == ["Eicar.At.End", "Eicar.At.Start"]
    assert found(EICAR + b"\n") == ["Eicar.At.Start"]
    assert found(b"\n" + EICAR) == ["Eicar.At.End"]
    assert found(b"x" + EICAR + b"x") == []
    assert found(b"") == []


@pytest.mark.parametrize("use_yara", [None, False])
def test_every_engine_of_the_detector_runs_once_and_together(tmp_path, use_yara):
    if use_yara is None:
        pytest.importorskip("yara")
    (tmp_path / "mixed.ndb").write_text(
        "Floating:0:*:464c4f4154\n"          # FLOAT anywhere: YARA's (or re's)
        "Anchored:0:0:5354415254\n"           # START at 0: in place (or re's)
        "Bounded:0:*:(B)574f5244(B)\n"        # WORD as a word: re's only
        "TwoPieces:0:EOF-7:454e44*4f46\n")    # END...OF from EOF-7: YARA's (or re's)
    data = b"START FLOAT a WORD ENDxOF!"
    (tmp_path / "a.hsb").write_text(f"{hashlib.sha256(data).hexdigest()}:{len(data)}:Hashed\n")
    detector = ClamavDbDetector.from_paths([str(tmp_path)], use_yara=use_yara)
    if use_yara is None:
        assert detector.engines == {"yara": 2, "in place": 1, "re": 1}
    assert [f.name for f in detector.scan(ScanObject(data, "1"))] == [
        "Anchored", "Bounded", "Floating", "Hashed", "TwoPieces"]
    assert [f.name for f in detector.scan(ScanObject(b"x" + data[1:], "1"))] == ["Bounded", "Floating", "TwoPieces"]
