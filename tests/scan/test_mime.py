from __future__ import annotations

import pytest

from mailguard.scan.mime import MAX_PARTS, parse_message
from tests.scan.corpus import GREETING, attachment, message, nested, part, single, text_part


def _sections(raw: bytes) -> dict[str, bytes]:
    tree = parse_message(raw)
    return {p.section: bytes(p.body()) for p in tree.leaves()}


def test_single_part_message_body_is_section_1() -> None:
    raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    tree = parse_message(raw)
    assert tree.is_message and tree.section == "1" and not tree.children
    assert bytes(tree.body()) == b"hello\r\n"
    assert raw[tree.header_start:tree.header_end] == b"Subject: x\r\nContent-Type: text/plain\r\n"


def test_imap_numbering_with_nested_messages() -> None:
    # RFC 3501 §6.4.5: parts of an attached multipart message are 2.1, 2.2; a non-multipart one is 2.1.
    inner_multi = message([text_part(b"inner text"), attachment(b"data", "d.bin")], boundary=b"in")
    raw = message([GREETING, part(inner_multi, b"Content-Type: message/rfc822\r\n"),
                   part(single(b"plain inner"), b"Content-Type: message/rfc822\r\n")])
    sections = _sections(raw)
    assert set(sections) == {"1", "2.1", "2.2", "3.1"}
    assert sections["2.1"] == b"inner text" and sections["3.1"] == b"plain inner"
    tree = parse_message(raw)
    wrapper = tree.children[1]
    assert wrapper.media_type == "message/rfc822" and wrapper.number == "2"
    assert wrapper.children[0].is_message and wrapper.children[0].number == "2"


def test_offsets_point_into_the_raw_message() -> None:
    raw = message([GREETING, attachment(b"payload", "p.bin")])
    for leaf in parse_message(raw).leaves():
        assert raw[leaf.body_start:leaf.body_end] == bytes(leaf.body())
        assert raw[leaf.header_start:leaf.header_end].startswith(b"Content-Type:")


def test_delimiter_line_ending_belongs_to_the_delimiter() -> None:
    # RFC 2046 §5.1.1: the CRLF before "--boundary" is not part of the body.
    assert _sections(message([text_part(b"no trailing newline")]))["1"] == b"no trailing newline"


@pytest.mark.parametrize("nl", [b"\n", b"\r"])
def test_bare_lf_and_cr_only_messages(nl: bytes) -> None:
    raw = message([GREETING, attachment(b"x", "x.bin")]).replace(b"\r\n", nl)
    tree = parse_message(raw)
    assert [p.section for p in tree.leaves()] == ["1", "2"]
    assert tree.children[1].filenames == ("x.bin",)


def test_preamble_and_epilogue_ranges() -> None:
    raw = message([GREETING], preamble=b"PRE\r\n", epilogue=b"EPI\r\n")
    tree = parse_message(raw)
    assert raw[slice(*tree.preamble)] == b"PRE"
    assert raw[slice(*tree.epilogue)] == b"EPI\r\n"


def test_missing_final_delimiter_runs_to_the_end() -> None:
    raw = message([GREETING, text_part(b"last")]).rsplit(b"\r\n--=_mg_outer--", 1)[0]
    assert _sections(raw)["2"] == b"last"


def test_conflicting_boundaries_give_alternates_and_ambiguity() -> None:
    body = b"--two\r\n\r\nA\r\n--two--\r\n"
    raw = b'Content-Type: multipart/mixed; boundary=one; boundary=two\r\n\r\n' + body
    tree = parse_message(raw)
    assert tree.ambiguous
    assert [bytes(p.body()) for p in tree.children] == [b"A"]
    # a client reading boundary "one" finds no delimiter and shows the body as text
    assert [bytes(p.body()) for p in tree.alternates] == [body]
    assert {p.section for p in tree.leaves()} == {"1", "alt1"}


def test_strict_and_lenient_delimiters() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nA\r\n--bX\r\n\r\nB\r\n--b--\r\n'
    tree = parse_message(raw)
    assert [bytes(p.body()) for p in tree.children] == [b"A\r\n--bX\r\n\r\nB"]
    assert [bytes(p.body()) for p in tree.alternates] == [b"A", b"B"]
    assert tree.ambiguous and tree.alternates[0].number == "alt1.1"


def test_a_multipart_without_a_boundary_is_one_leaf_plus_the_readings_a_guessing_client_makes() -> None:
    # RFC 2046 §5.1.1: the boundary parameter is mandatory (docs/pitfalls.md#multipart-without-a-boundary).
    body = (b"-----BEGIN PGP MESSAGE----- is a decoy\r\n--decoy\r\nnot a part\r\n"
            b"--real\r\nContent-Type: text/plain\r\n\r\nA\r\n--real\r\n\r\nB\r\n--real--\r\n")
    raw = b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\n" + body
    tree = parse_message(raw)
    assert not tree.children and bytes(tree.body()) == body  # what strict clients show: one part
    assert tree.ambiguous
    # one reading per delimiter-like line (each runs to the end but the last, which splits A and B),
    # and munpack's: every line starting "--" is a delimiter
    readings = {p.section: bytes(p.body()) for p in tree.alternates}
    assert readings == {"alt1.1": body[body.index(b"--decoy"):], "alt2.1": body[body.index(b"not a"):],
                        "alt3.1": b"A", "alt3.2": b"B",
                        "alt5.1": b"", "alt5.2": b"not a part", "alt5.3": b"A", "alt5.4": b"B", "alt5.5": b""}
    assert {p.section for p in tree.leaves()} == {"1", *readings}


def test_decoy_lines_do_not_hide_the_parts_of_a_multipart_without_a_boundary() -> None:
    body = b"".join(b"--decoy%d\r\n" % n for n in range(10)) + b"--real\r\nContent-Type: x/y\r\n\r\nA\r\n--real--\r\n"
    tree = parse_message(b"Content-Type: multipart/mixed\r\n\r\n" + body)
    assert b"A" in [bytes(p.body()) for p in tree.alternates]


def test_a_multipart_without_a_boundary_or_any_line_starting_with_dashes_is_one_leaf() -> None:
    for body in (b"just text\r\n", b"a\r\nb--c\r\n", b" --x\r\n"):
        tree = parse_message(b"Content-Type: multipart/mixed\r\n\r\n" + body)
        assert not tree.children and not tree.alternates and not tree.ambiguous
    # no boundary a client could guess ("-- ", 71 characters), but munpack still splits there
    tree = parse_message(b"Content-Type: multipart/mixed\r\n\r\ntext\r\n-- \r\n--" + b"x" * 71 + b"\r\nsig\r\n")
    assert not tree.children and [bytes(p.body()) for p in tree.alternates] == [b"", b"sig\r\n"]  # "text": preamble


def test_encoded_message_rfc822_is_walked_detached() -> None:
    import base64
    inner = single(b"secret", b"Content-Type: text/plain\r\n")
    raw = message([GREETING, part(base64.encodebytes(inner), b"Content-Type: message/rfc822\r\n"
                                  b"Content-Transfer-Encoding: base64\r\n")])
    leaf = next(p for p in parse_message(raw).leaves() if p.section == "2.1")
    assert leaf.detached and bytes(leaf.body()) == b"secret"


def test_email_files_off_leaves_attached_message_as_a_leaf() -> None:
    raw = nested(single(b"x"))
    assert [p.section for p in parse_message(raw, email_files=False).leaves()] == ["1", "2"]


def test_mbox_from_line_is_not_a_header() -> None:
    raw = b"From alice@example.org Tue Apr  1 10:00:00 2025\nSubject: x\n\nbody\n"
    tree = parse_message(raw)
    assert [h.name for h in tree.headers] == ["subject"] and bytes(tree.body()) == b"body\n"


def test_part_count_limit_is_reported_not_exceeded() -> None:
    raw = message([text_part(b"x")] * (MAX_PARTS + 5))
    tree = parse_message(raw)
    assert len(list(tree.walk())) <= MAX_PARTS + 1
    assert any(p.problems for p in tree.walk())


def test_deep_nesting_is_bounded() -> None:
    raw = b"x"
    for level in range(200):
        raw = f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode() + raw
    tree = parse_message(raw)
    assert any(p.problems for p in tree.walk())


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = b'Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: e\r\n\r\nentry\r\n--d--\r\n'
    tree = parse_message(raw)
    assert tree.children[0].media_type == "message/rfc822"
    assert {p.section: bytes(p.body()) for p in tree.leaves()} == {"1.1": b"entry"}


@pytest.mark.parametrize("filler", [b"", b"-", b"--", b"-x-", b"--=_mg_oute", b"A" * 50])
def test_delimiter_search_is_exact_among_dashes(filler: bytes) -> None:
    from mailguard.scan.mime import _find_dashes

    needle = b"--=_mg_outer"
    for count in (0, 5, 40, 200):
        buf = filler * count + needle + filler * 3 + needle
        assert _find_dashes(buf, needle, 0, len(buf)) == buf.find(needle)
        assert _find_dashes(buf, needle, 1, len(buf) - 2) == buf.find(needle, 1, len(buf) - 2)
