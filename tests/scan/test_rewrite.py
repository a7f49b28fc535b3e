from __future__ import annotations

import dataclasses
import io
import zipfile

import pytest

from mailguard.scan.engine import Engine
from mailguard.scan.mime import parse_message
from mailguard.scan.mime_headers import decode_encoded_words
from mailguard.scan.policy import Policy
from mailguard.scan.rewrite import MAX_LINE, TLS_HEADER, add_header, result_value, tls_value
from mailguard.scan.verdict import Finding, Incomplete, Reason, Status, Verdict
from tests.scan.corpus import GREETING, HEAD, attachment, message, single
from tests.scan.reference_detector import EICAR, EICAR_NAME, ReferenceDetector

INFECTED = message([GREETING, attachment(EICAR, "eicar.com")])
CLEAN = message([GREETING, attachment(b"fine", "fine.bin")])


def _engine(**policy: object) -> Engine:
    return Engine(dataclasses.replace(Policy(), **policy), [ReferenceDetector()])


def _run(raw: bytes, **policy: object) -> bytes:
    engine = _engine(**policy)
    return engine.apply(raw, engine.scan(raw))


def _headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(h.name, h.value) for h in parse_message(raw).headers]


def test_result_values() -> None:
    assert result_value(Verdict.build([], [])) == "clean"
    assert result_value(Verdict.build([Finding("B", "d", "1"), Finding("A", "d", "2")], [])) == 'infected; detections="A, B"'
    unscanned = Verdict.build([], [Incomplete(Reason.LIMIT, "2"), Incomplete(Reason.ENCRYPTED, "3")])
    assert result_value(unscanned) == 'unscanned; reason="encrypted, limit"'


@pytest.mark.parametrize(("tag", "tagged"), [("never", False), ("infected", False), ("all", True)])
def test_clean_message_tagging(tag: str, tagged: bool) -> None:
    out = _run(CLEAN, tag_received=tag)
    head_end = CLEAN.index(b"\r\n\r\n") + 2
    expected = CLEAN[:head_end] + b"X-MailGuard-Result: clean\r\n" + CLEAN[head_end:] if tagged else CLEAN
    assert out == expected


@pytest.mark.parametrize("tag", ["never", "infected", "all"])
def test_unscanned_is_always_tagged(tag: str) -> None:
    raw = single(b"x", b"Content-Type: message/partial; id=a\r\n")
    out = _run(raw, tag_received=tag)
    assert ("x-mailguard-result", b'unscanned; reason="unsupported"') in _headers(out)
    assert out.replace(b'X-MailGuard-Result: unscanned; reason="unsupported"\r\n', b"") == raw


def test_tag_is_inserted_at_the_end_of_the_top_header_block() -> None:
    out = _run(INFECTED, action="none", subject_received=False)
    head_end = INFECTED.index(b"\r\n\r\n") + 2
    assert out == INFECTED[:head_end] + b'X-MailGuard-Result: infected; detections="Eicar-Test-Signature"\r\n' + INFECTED[head_end:]


def test_a_sender_written_result_header_is_replaced() -> None:
    raw = b"X-MailGuard-Result: clean\r\n" + INFECTED
    out = _run(raw, action="none")
    results = [v for n, v in _headers(out) if n == "x-mailguard-result"]
    assert results == [b'infected; detections="Eicar-Test-Signature"']


def test_subject_prefix_and_alias() -> None:
    out = _run(INFECTED, action="none", subject_template="*%VIRUSNAME%* [%DETECTIONNAME%]")
    assert ("subject", f"*{EICAR_NAME}* [{EICAR_NAME}] quarterly figures".encode()) in _headers(out)


def test_tagging_twice_keeps_one_prefix() -> None:
    once = _run(INFECTED, action="none")
    twice = _run(once, action="none")
    subjects = [v for n, v in _headers(twice) if n == "subject"]
    assert subjects == [f"[detection {EICAR_NAME}] quarterly figures".encode()]


def test_subject_inserted_when_missing_keeping_line_endings() -> None:
    raw = b"From: a@example.org\n\n" + EICAR + b"\n"
    out = _run(raw, action="none")
    assert out.startswith(b"From: a@example.org\nX-MailGuard-Result: infected;")
    assert b"\nSubject: [detection Eicar-Test-Signature]\n\n" in out
    assert b"\r" not in out


def test_non_ascii_template_is_encoded() -> None:
    out = _run(INFECTED, action="none", subject_template="[Вирус %DETECTIONNAME%]")
    subject = dict(_headers(out))["subject"].decode("ascii")
    assert decode_encoded_words(subject).startswith(f"[Вирус {EICAR_NAME}]")


def test_long_subject_is_folded_within_998() -> None:
    raw = HEAD.replace(b"Subject: quarterly figures", b"Subject: " + b"x" * 990) + b"\r\n" + EICAR
    out = _run(raw, action="none")
    assert max(len(line) for line in out.split(b"\r\n")) <= MAX_LINE
    assert dict(_headers(out))["subject"].endswith(b"x" * 990)


def test_cr_only_message_keeps_its_style() -> None:
    raw = INFECTED.replace(b"\r\n", b"\r")
    out = _run(raw)
    assert b"\n" not in out and _engine().scan(out).status is Status.CLEAN


def test_action_none_keeps_the_infected_bytes() -> None:
    out = _run(INFECTED, action="none")
    assert _engine().scan(out).status is Status.INFECTED


def test_action_clean_replaces_only_the_part() -> None:
    out = _run(INFECTED, tag_received="never", subject_received=False)
    tree = parse_message(INFECTED)
    target = tree.children[1]
    assert out[:target.header_start] == INFECTED[:target.header_start]
    assert out.endswith(INFECTED[target.body_end:])
    cleaned = parse_message(out).children[1]
    assert cleaned.media_type == "text/plain" and cleaned.encodings == ("7bit",)
    assert cleaned.filenames == ("eicar.com.txt",)
    assert b"It contains malware: Eicar-Test-Signature." in bytes(cleaned.body())


def test_action_replace_keeps_only_the_listed_headers() -> None:
    raw = HEAD.replace(b"MIME-Version", b"Cc: carol@example.com\r\nReceived: from x\r\nMIME-Version") + \
        b"Content-Type: text/plain\r\n\r\n" + EICAR
    out = _run(raw, action="replace", tag_received="never", subject_received=False)
    names = [n for n, _v in _headers(out)]
    assert names == ["from", "to", "date", "message-id", "subject", "cc", "mime-version",
                     "content-type", "content-transfer-encoding"]
    assert EICAR not in out and b"This message was replaced by mailguard." in out


def test_replacement_is_deterministic() -> None:
    assert _run(INFECTED, action="replace") == _run(INFECTED, action="replace")


def test_block_treats_unscanned_as_infected() -> None:
    raw = message([GREETING, single(b"x", b"Content-Type: message/partial; id=a\r\n")[len(HEAD):]])
    passed = _run(raw, on_scan_error="pass")
    blocked = _run(raw, on_scan_error="block")
    assert b"This part was removed" not in passed
    assert b"It could not be scanned (unsupported)" in blocked


def test_member_of_an_archive_replaces_the_whole_archive_part() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.exe", EICAR)
    raw = message([GREETING, attachment(buffer.getvalue(), "invoice.zip", "application/zip")])
    out = _run(raw)
    assert b"invoice.zip.txt" in out and b"UEsDB" not in out  # no zip local header left, in base64


def test_ambiguous_structure_replaces_the_message() -> None:
    body = b"--b\r\n" + GREETING + b"\r\n--bX\r\n" + attachment(EICAR, "e.com") + b"\r\n--b--\r\n"
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body
    out = _run(raw)
    assert b"This message was replaced by mailguard." in out


def test_root_finding_not_pinned_to_a_part_replaces_the_message() -> None:
    verdict = Verdict.build([Finding("Whole.Message", "clamd", "")], [])
    out = _engine().apply(CLEAN, verdict)
    assert b"This message was replaced by mailguard." in out


def test_unscanned_whole_message_under_block_is_replaced() -> None:
    verdict = Verdict.build([], [Incomplete(Reason.TIMEOUT, "")])
    out = _engine(on_scan_error="block").apply(CLEAN, verdict)
    assert b"This message was replaced by mailguard." in out and b"timeout" in out


def test_long_names_keep_every_line_within_998() -> None:
    long_name = "évil" * 400 + ".exe"
    raw = message([GREETING, attachment(EICAR, "x.com")]).replace(b'"x.com"', f'"{long_name}"'.encode())
    many = Verdict.build([Finding(f"Detection.{i}." + "x" * 150, "d", "2") for i in range(20)], [])
    for verdict in (_engine().scan(raw), many):
        for action in ("clean", "replace"):
            out = _engine(action=action).apply(raw, verdict)
            assert max(len(line) for line in out.split(b"\r\n")) <= MAX_LINE
            assert EICAR not in out


# --- add_header: the X-MailGuard-TLS tag (issue 5) ----------------------------------------------


def test_add_header_splices_at_the_end_of_the_top_header_block() -> None:
    value = tls_value(("expired", "wrong-host"))
    assert value == "upstream certificate accepted by policy despite: expired, wrong-host"
    out = add_header(CLEAN, TLS_HEADER, value)
    head_end = CLEAN.index(b"\r\n\r\n") + 2
    # 89 characters on one line would pass 78: folded at a space (RFC 5322 §2.2.3)
    field = b"X-MailGuard-TLS: upstream certificate accepted by policy despite: expired,\r\n wrong-host\r\n"
    assert out == CLEAN[:head_end] + field + CLEAN[head_end:]


def test_add_header_after_the_result_tag_keeps_both() -> None:
    tagged = _run(INFECTED, action="none")
    out = add_header(tagged, TLS_HEADER, tls_value(("unverifiable",)))
    names = [n for n, _ in _headers(out)]
    assert names.count("x-mailguard-result") == 1 and names.count("x-mailguard-tls") == 1
    assert out.replace(b"X-MailGuard-TLS: upstream certificate accepted by policy despite: unverifiable\r\n", b"") == tagged


def test_add_header_replaces_a_sender_written_field_and_folds_long_values() -> None:
    raw = b"X-MailGuard-TLS: all good\r\n" + CLEAN
    problems = tuple(f"problem-{i}" for i in range(40))
    out = add_header(raw, TLS_HEADER, tls_value(problems))
    values = [v for n, v in _headers(out) if n == "x-mailguard-tls"]
    assert len(values) == 1 and b"all good" not in values[0]
    head = out[: out.index(b"\r\n\r\n")]
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if line.startswith((b"X-MailGuard-TLS", b" problem")))
    assert out.endswith(CLEAN[CLEAN.index(b"\r\n\r\n"):])


@pytest.mark.parametrize("nl", [b"\n", b"\r"])
def test_add_header_keeps_the_line_ending_style(nl: bytes) -> None:
    raw = b"From: a@example.org" + nl + b"Subject: hi" + nl + nl + b"body" + nl
    out = add_header(raw, TLS_HEADER, tls_value(("expired",)))
    assert out == (b"From: a@example.org" + nl + b"Subject: hi" + nl
                   + b"X-MailGuard-TLS: upstream certificate accepted by policy despite: expired" + nl
                   + nl + b"body" + nl)


def test_add_header_to_a_message_without_body_or_final_newline() -> None:
    out = add_header(b"Subject: hi", TLS_HEADER, "x")
    assert out == b"Subject: hi\r\nX-MailGuard-TLS: x\r\n"
