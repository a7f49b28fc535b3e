"""The fast walk against the frozen one it replaced: the same tree, field for field.

``reference_mime`` / ``reference_mime_headers`` are copies of the walk before the speed work
(fast paths, caches, regex line matching). Any difference in a part's offsets, headers,
declared facts, ambiguity flags, problems or alternates is a behaviour change, so the
comparison covers every attribute of every part, over the corpus, mutated corpus messages,
arbitrary bytes and header-heavy generated input (quotes, escapes, comments, RFC 2231/2047).
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailguard.scan import mime, mime_headers
from tests.scan import reference_mime, reference_mime_headers
from tests.scan.corpus import CASES
from tests.scan.test_fuzz import SEEDS, mutated_messages

FUZZ = settings(max_examples=int(__import__("os").environ.get("MAILGUARD_FUZZ_EXAMPLES", "150")) * 2,
                deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])


def _header(h) -> tuple:
    return (h.name, h.start, h.end, h.value, h.hidden)


def _info(info) -> tuple:
    return (info.media_types, info.boundaries, info.encodings, info.filenames, info.content_type_fields)


def _part(p) -> tuple:
    return (p.number, p.is_message, bytes(p.source) if p.detached else None, p.header_start, p.header_end,
            p.body_start, p.body_end, [_header(h) for h in p.headers], _info(p.info), p.eol, p.message_depth,
            p.default_type, p.detached, p.ambiguous, p.problems, p.preamble, p.epilogue, p.media_type,
            p.encodings, p.section, len(p.children), len(p.alternates),
            p.parent.number if p.parent is not None else None)


def _tree(root) -> list[tuple]:
    return [_part(p) for p in root.walk()]


def assert_same_walk(raw: bytes, email_files: bool = True) -> None:
    assert _tree(mime.parse_message(raw, email_files=email_files)) == _tree(
        reference_mime.parse_message(raw, email_files=email_files))


def assert_same_block(raw: bytes, eol: bytes) -> None:
    new = mime_headers.parse_header_block(raw, 0, len(raw), eol)
    old = reference_mime_headers.parse_header_block(raw, 0, len(raw), eol)
    assert ([_header(h) for h in new.fields], new.end, new.body_start, new.bare_cr) == (
        [_header(h) for h in old.fields], old.end, old.body_start, old.bare_cr)
    assert _info(mime_headers.describe_entity(new.fields)) == _info(reference_mime_headers.describe_entity(old.fields))
    # What the walk reads instead: the Content-* fields alone, the full list only when needed.
    key, end, body_start, bare_cr, fields = mime_headers.scan_header_block(raw, 0, len(raw), eol)
    assert (end, body_start, bare_cr) == (old.end, old.body_start, old.bare_cr)
    assert key == tuple((h.name, h.value, h.hidden) for h in old.fields
                        if h.name in ("content-type", "content-disposition", "content-transfer-encoding"))
    assert fields is None or [_header(h) for h in fields] == [_header(h) for h in old.fields]


def test_corpus_walks_are_unchanged() -> None:
    for raw in SEEDS:
        assert_same_walk(raw)
        assert_same_walk(raw, email_files=False)
        assert_same_walk(raw.replace(b"\r\n", b"\n"))
        assert_same_walk(raw.replace(b"\r\n", b"\r"))


def test_describe_entity_cache_gives_the_same_answer_twice() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="a;b\\"c" (x); boundary*0=y; boundary*1*=%41\n\n'
    for _ in range(3):
        assert_same_block(raw, b"\n")


@FUZZ
@given(mutated_messages())
def test_mutated_walks_are_unchanged(raw: bytes) -> None:
    assert_same_walk(raw)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_walks_are_unchanged(raw: bytes) -> None:
    assert_same_walk(raw)


_PIECES = st.sampled_from([
    "Content-Type", "content-type ", "Content-Disposition", "Content-Transfer-Encoding", "X-A", ":", ": ", ";",
    " ", "\t", '"', "\\", "(", ")", "=", "*", "*0", "*1*", "'", "%41", "=?utf-8?B?ZXZpbA==?=", "=?x?Q?a_b?=",
    "multipart/mixed", "text/plain", "boundary", "name", "filename", "base64", "a.exe", "\r\n", "\n", "\r",
    "\r\n ", "\n\t", "\r\r\n", "\r\n\r\n", "\n\n", "é", "\x00", "\x0b",
])


@FUZZ
@given(st.lists(_PIECES, max_size=40).map("".join), st.sampled_from([b"\n", b"\r"]))
def test_generated_header_blocks_are_unchanged(text: str, eol: bytes) -> None:
    raw = text.encode("utf-8")
    assert_same_block(raw, eol)
    assert_same_walk(raw + b"\n\nbody")


@FUZZ
@given(st.lists(_PIECES, max_size=24).map("".join))
def test_parameter_parsing_is_unchanged(text: str) -> None:
    for strip in (True, False):
        new = mime_headers.parse_parameterized(text, strip_comments=strip)
        assert new == reference_mime_headers.parse_parameterized(text, strip_comments=strip)
        for wanted in ("boundary", "name", "filename"):
            assert mime_headers.parameter_values(new[1], wanted) == reference_mime_headers.parameter_values(
                new[1], wanted)


_SIMPLE_PARAM_PIECES = st.sampled_from([
    "multipart/mixed", "Text/PLAIN", "application/pdf", ";", "; ", " ", "\t", "=", '"', "boundary", "NAME", "filename",
    "=_bench_1", "----=_Part_1.2", "a b", "a;b", "x=y", "é", "(", ")", "*", "\\", "\x1c", "\x0b", "\u00a0", "K", "",
])


@FUZZ
@given(st.lists(_SIMPLE_PARAM_PIECES, max_size=12).map("".join))
def test_simple_parameter_shape_reads_as_the_general_parser(text: str) -> None:
    fast = mime_headers._simple_parameterized(text)
    assert fast is None or fast == reference_mime_headers.parse_parameterized(text)


def test_simple_parameter_shape_is_taken() -> None:
    for text in ('multipart/mixed; boundary="=_b 1;x"', "multipart/mixed;boundary=----=_Part_1.2 ",
                 'image/png; NAME="fïle(1)*.png"', "attachment; filename=a.exe", "\ttext/plain ;\tcharset=utf-8\t"):
        fast = mime_headers._simple_parameterized(text)
        assert fast is not None and fast == reference_mime_headers.parse_parameterized(text)


def test_simple_header_blocks_read_as_the_general_parser() -> None:
    head = (b"From: a\r\nContent-type : multipart/mixed;\r\n\tboundary=\"b\" \r\n  \r\nCONTENT-DISPOSITION:inline\n"
            b"Content-Transfer-Encoding:  Base64 \t\r\nContent-Type-X: y\r\nX-Content-Type: z\r\n")
    for raw in (head, head + b"\r\nbody", head + b"\nbody", head + b"\r\r\nbody", head + b"\rbody",
                head + b"not a field\r\n", head + b" ", b"", b"\r\n", b" x: y\r\n\r\n"):
        assert_same_block(raw, b"\n")
        assert_same_walk(raw)


def test_every_corpus_case_is_covered() -> None:
    assert len(SEEDS) > 20 and len(CASES) >= len(SEEDS)


_BODY_PIECES = st.sampled_from([b"--b", b"--b--", b"--bX", b"--", b"-", b"b", b"\r", b"\n", b"\r\n", b" ", b"\t",
                                b"\x0b", b"x", b"Content-Type: text/plain\r\n", b"\r\n\r\n"])


@FUZZ
@given(st.lists(_BODY_PIECES, max_size=30).map(b"".join), st.sampled_from([b"\n", b"\r"]), st.integers(0, 3))
def test_delimiter_readings_are_unchanged(body: bytes, eol: bytes, cut: int) -> None:
    start, end = min(cut, len(body)), max(len(body) - cut, min(cut, len(body)))
    assert mime._delimiter_readings(body, start, end, b"b", eol) == reference_mime._delimiter_readings(
        body, start, end, b"b", eol)
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body
    assert_same_walk(raw)
