"""The .ndb hex grammar, offsets and the shared trigger search."""

from __future__ import annotations

import dataclasses
import random
import re
import time

import pytest

from mailguard.scan.detectors import ndb
from mailguard.scan.detectors.ndb_re import BodyMatcher

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class _Combined:
    """YARA for what it can express, ``re`` for the leftovers: what ClamavDbDetector runs."""

    def __init__(self, signatures: list[ndb.BodySignature]) -> None:
        from mailguard.scan.detectors.ndb_yara import YaraBodyMatcher

        self.yara = YaraBodyMatcher(signatures, timeout=10)
        self.rest = BodyMatcher(self.yara.leftovers)

    def match(self, data: bytes) -> list[str]:
        return sorted(set(self.yara.match(data)) | set(self.rest.match(data)))


@pytest.fixture(params=["re", "yara"])
def engine(request):
    if request.param == "yara":
        pytest.importorskip("yara")
        return _Combined
    return BodyMatcher


@pytest.fixture
def matcher(engine):
    """Both engines must give the same answers on every case (a differential test)."""
    return lambda *lines: engine([ndb.parse_line(line) for line in lines])


@pytest.mark.parametrize("hexsig,hits,misses", [
    ("41424344", [b"xxABCDxx"], [b"ABC", b"ABDC"]),
    ("4142??44", [b"ABzD", b"AB\x00D"], [b"ABD"]),
    ("41424?", [b"ABC", b"ABO"], [b"ABP", b"AB"]),
    ("4142?3", [b"ABS", b"AB3", b"AB#"], [b"ABT"]),
    ("4142*5a5a", [b"AB....ZZ", b"ABZZ", b"AB" + b"." * 100_000 + b"ZZ"], [b"ZZAB", b"AB.Z.Z"]),
    ("4142{2}4344", [b"AB..CD"], [b"AB.CD", b"AB...CD"]),
    ("4142{1-3}4344", [b"AB.CD", b"AB...CD"], [b"ABCD", b"AB....CD"]),
    ("4142{-2}4344", [b"ABCD", b"AB..CD"], [b"AB...CD"]),
    ("4142{3-}4344", [b"AB...CD", b"AB" + b"." * 5000 + b"CD"], [b"AB..CD"]),
    ("4142[1-2]4344", [b"AB.CD", b"AB..CD"], [b"ABCD"]),
    ("41(42|4343)44", [b"ABD", b"ACCD"], [b"ACD", b"AD"]),
    ("(41|42)4344", [b"ACD", b"BCD"], [b"CCD"]),
    ("41!(42|43)44", [b"AXD"], [b"ABD", b"ACD"]),
    ("41!(4242|4343)44", [b"AXYD", b"ABCD"], [b"ABBD", b"ACCD"]),
    ("(B)776f7264(B)", [b"a word.", b"word"], [b"swordfish", b"words"]),
    ("(L)4142", [b"x\nAB", b"AB"], [b"xAB"]),
    ("41(W)42", [b"A B", b"A.B"], [b"AxB"]),
])
def test_hex_grammar(matcher, hexsig, hits, misses):
    m = matcher(f"Test.Sig:0:*:{hexsig}")
    for data in hits:
        assert m.match(data) == ["Test.Sig"], data
    for data in misses:
        assert m.match(data) == [], data


@pytest.mark.parametrize("offset,hits,misses", [
    ("0", [b"ABxxxx"], [b"xABxxx"]),
    ("3", [b"xxxAB"], [b"xxAB", b"xxxxAB"]),
    ("2,3", [b"xxAB", b"xxxxxAB"], [b"xAB", b"xxxxxxAB"]),
    ("EOF-2", [b"xxxxAB"], [b"xxxABx"]),
    ("EOF-4,2", [b"xxxxABxx", b"xxxxxABx", b"xxxxxxAB"], [b"xxxABxxx", b"ABxxxxxx"]),
])
def test_offsets(matcher, offset, hits, misses):
    m = matcher(f"Off:0:{offset}:4142")
    for data in hits:
        assert m.match(data) == ["Off"], data
    for data in misses:
        assert m.match(data) == [], data


def test_target_types_with_a_magic_only_run_on_such_files(matcher):
    m = matcher("PE.Sig:1:*:41424344", "Any.Sig:0:*:41424344")
    assert m.match(b"MZ....ABCD") == ["Any.Sig", "PE.Sig"]
    assert m.match(b"%PDF-ABCD") == ["Any.Sig"]


def test_overlapping_signatures_do_not_hide_each_other(matcher):
    # The first trigger's tail is absent; the second signature starts inside the first's match.
    m = matcher("Long:0:*:4556494c5041525431*4e45564552", "Short:0:*:5041525431585958")
    assert m.match(b"EVILPART1XYX") == ["Short"]
    # Two signatures starting at the same byte.
    m = matcher("A:0:*:41424344", "B:0:*:414243(45|46)")
    assert m.match(b"..ABCE..ABCD") == ["A", "B"]


def test_all_names_found_sorted(matcher):
    m = matcher("Z.Sig:0:*:5a5a5a", "A.Sig:0:*:414141", "Eicar:0:*:" + EICAR.hex())
    assert m.match(b"AAA ZZZ " + EICAR) == ["A.Sig", "Eicar", "Z.Sig"]


def test_a_frequent_first_piece_with_an_absent_tail_stays_linear(matcher):
    m = matcher("Star:0:*:4142*5a5a5a5a5a")
    data = b"AB" * 200_000  # 200 000 triggers; rescanning the rest at each would be ~10^11 steps
    started = time.monotonic()
    assert m.match(data) == []
    assert time.monotonic() - started < 2.0


def test_many_signatures_match_like_each_alone(matcher):
    rng = random.Random(7)
    lines = []
    for number in range(300):
        literal = bytes(rng.randrange(256) for _ in range(rng.randint(2, 8)))
        tail = bytes(rng.randrange(256) for _ in range(3))
        shape = number % 3
        hexsig = literal.hex() + ("" if shape == 0 else "??" if shape == 1 else "{0-4}") + tail.hex()
        lines.append(f"S{number}:0:*:{hexsig}")
    data = bytes(rng.randrange(256) for _ in range(200_000))
    for line in lines[::10]:  # plant some
        sig = ndb.parse_line(line)
        start = rng.randrange(len(data) - 50)
        planted = sig.literal_prefix + b"\x00" + bytes.fromhex(line.rsplit(":", 1)[1][-6:])
        data = data[:start] + planted + data[start + len(planted):]
    together = matcher(*lines).match(data)
    alone = sorted(line.split(":")[0] for line in lines if BodyMatcher([ndb.parse_line(line)]).match(data))
    assert together == alone
    assert len(together) >= 30


@pytest.mark.parametrize("line,message", [
    ("Bad:0:*", "expected Name:TargetType"),
    (":0:*:4142", "empty signature name"),
    ("Bad:99:*:4142", "bad target type"),
    ("Bad:x:*:4142", "bad target type"),
    ("Bad:0:nowhere:4142", "bad offset"),
    ("Bad:0:*:414", "odd number of hex digits"),
    ("Bad:0:*:41zz", "bad hex byte"),
    ("Bad:0:*:", "empty hex signature"),
    ("Bad:0:*:*4142", "may not start"),
    ("Bad:0:*:{2}4142", "may not start with a gap"),
    ("Bad:0:*:41{2-1}42", "bad range"),
    ("Bad:0:*:41{x}42", "bad range"),
    ("Bad:0:*:41{2-42", "unclosed '{'"),
    ("Bad:0:*:41(42|4343", "unclosed '('"),
    ("Bad:0:*:41(42|)43", "empty or odd-length alternative"),
    ("Bad:0:*:41!(42|4343)44", "same length"),
    ("Bad:0:*:4142:x", "bad functionality level"),
])
def test_bad_lines(line, message):
    with pytest.raises(ndb.SignatureSyntaxError, match=re.escape(message)):
        ndb.parse_line(line)


@pytest.mark.parametrize("offset", ["EP+0", "EP-10", "S1+4", "SL+8", "SE2", "VI"])
def test_executable_relative_offsets_are_unsupported_not_bad(offset):
    with pytest.raises(ndb.UnsupportedOffset):
        ndb.parse_line(f"Exe.Sig:1:{offset}:4142")


def test_yara_translation_and_leftovers():
    pytest.importorskip("yara")
    from mailguard.scan.detectors.ndb_yara import YaraBodyMatcher

    lines = ["A:1:EOF-8:4142??(43|4444)*5a5a", "B:0:*:(B)776f7264(B)", "C:0:*:41!(42|43)44", "D:0:2,4:4?41"]
    signatures = [ndb.parse_line(line) for line in lines]
    assert [s.yara_hex for s in signatures] == ["41 42 ?? ( 43 | 44 44 ) [0-] 5A 5A", None, None, "4? 41"]
    fast = YaraBodyMatcher(signatures, timeout=10)
    assert [s.name for s in fast.signatures] == ["A"]  # anchored, but two pieces: YARA's
    assert [s.name for s in fast.anchored.signatures] == ["D"]  # anchored, one piece: checked in place
    assert [s.name for s in fast.leftovers] == ["B", "C"]
    everything = YaraBodyMatcher(signatures, timeout=10, anchored_in_place=False)
    assert [s.name for s in everything.signatures] == ["A", "D"]


def test_yara_refusing_a_rule_moves_it_to_re(monkeypatch):
    pytest.importorskip("yara")
    from mailguard.scan.detectors.ndb_yara import YaraBodyMatcher

    good, odd = ndb.parse_line("Good:0:*:41424344"), ndb.parse_line("Odd:0:*:45464748")
    odd = dataclasses.replace(odd, yara_hex="45 46 [5-2] 47")  # a jump YARA refuses
    fast = YaraBodyMatcher([good, odd], timeout=10)
    assert ([s.name for s in fast.signatures], [s.name for s in fast.leftovers]) == (["Good"], ["Odd"])


def test_yara_match_cap_is_rechecked():
    """A million decoy prefixes must not push the real match out of YARA's view."""
    pytest.importorskip("yara")
    combined = _Combined([ndb.parse_line("Capped:0:*:4142*5a5a5a")])
    assert combined.match(b"AB" * 1_200_000 + b"ZZZ") == ["Capped"]
