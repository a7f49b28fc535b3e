"""What the client receives: tags, the subject prefix and ``response.action``, by splicing bytes.

Never re-serialise (docs/architecture.md#rewrite-by-splicing,
docs/pitfalls.md#re-serialising-a-message): every byte we do not mean to change keeps its place, so
a clean message under the default settings comes back identical, and a cleaned one differs only in
the infected part and the tags.

Guarantee: infected bytes never reach the client unless ``response.action = none``. When
splicing one part out cannot promise that (the part sits under an ambiguous structure, a
finding is not tied to a part, the cleaned message still scans dirty), the whole message
is replaced by a notice instead.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from mailguard.scan.mime import Part, parse_message
from mailguard.scan.mime_headers import parse_header_block
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Status, Verdict

RESULT_HEADER = "X-MailGuard-Result"
TLS_HEADER = "X-MailGuard-TLS"  # the server leg's certificate was let through despite problems
MAX_LINE = 998               # RFC 5322 §2.1.1: a line MUST NOT exceed 998 characters
FOLD_AT = 78                 # RFC 5322 §2.1.1: SHOULD NOT exceed 78
MAX_NAME_IN_NOTICE = 200     # characters of a detection or file name quoted in notices and headers
MAX_NAME_IN_FIELD = 60       # characters of the original file name kept in the notice part's fields
KEPT_ON_REPLACE = ("from", "to", "cc", "date", "subject", "message-id")  # docs/settings.md#response
_CONTENT_FIELDS = ("content-type", "content-transfer-encoding", "content-disposition")


def apply(raw: bytes, verdict: Verdict, policy: Policy, *, rescan: Callable[[bytes], Verdict]) -> bytes:
    """``raw`` as the client should receive it under ``policy``.

    ``rescan`` (the engine's ``scan``) checks a cleaned message before it is let through.
    """
    blocked = verdict.acted_on or (verdict.status is Status.UNSCANNED and policy.on_scan_error == "block")
    out = raw
    if blocked and policy.action == "replace":
        out = replacement_message(raw, verdict)
    elif blocked and policy.action == "clean":
        out = _cleaned_or_replaced(raw, verdict, policy, rescan)
    return tag(out, verdict, policy)


# ---------------------------------------------------------------- response.action = clean


def _cleaned_or_replaced(raw: bytes, verdict: Verdict, policy: Policy,
                         rescan: Callable[[bytes], Verdict]) -> bytes:
    tree = parse_message(raw, email_files=policy.email_files)
    targets = _targets(tree, verdict, policy)
    if targets is None:
        return replacement_message(raw, verdict)
    cleaned = _splice(raw, [edit for part in targets for edit in _clean_part_edits(raw, part, verdict)])
    check = rescan(cleaned)
    if check.acted_on or (check.status is Status.UNSCANNED and policy.on_scan_error == "block"):
        return replacement_message(raw, verdict)
    return cleaned


def _targets(tree: Part, verdict: Verdict, policy: Policy) -> list[Part] | None:
    """The parts whose bodies must go, or None when only replacing the message is safe."""
    index: dict[str, Part] = {}
    for part in tree.walk():
        index.setdefault(part.section, part)
    paths = [f.part for f in verdict.findings]
    if policy.on_scan_error == "block":
        paths += [i.part for i in verdict.incomplete]
    part_names = {f.name for f in verdict.findings if f.part}
    for finding in verdict.findings:
        # A finding on the whole raw message (e.g. clamd given the root) is covered only
        # when the same detection was also pinned to a part.
        if not finding.part and finding.name not in part_names:
            return None
    targets: list[Part] = []
    for path in paths:
        if not path:
            if any(not i.part for i in verdict.incomplete) and policy.on_scan_error == "block":
                return None
            continue
        node = _locate(index, path.split("/", 1)[0])
        if node is None or any(a.ambiguous for a in node.ancestors()):
            return None
        targets.append(node)
    chosen = set(targets)
    return [t for t in dict.fromkeys(targets) if not any(a in chosen for a in t.ancestors())]


def _locate(index: dict[str, Part], section: str) -> Part | None:
    """The part holding ``section`` in the raw bytes: climb out of decoded (detached) subtrees."""
    node = index.get(section)
    while node is None and "." in section:
        section = section.rsplit(".", 1)[0]
        node = index.get(section)
    while node is not None and node.detached:
        node = node.parent
    return node


def _clean_part_edits(raw: bytes, part: Part, verdict: Verdict) -> list[tuple[int, int, bytes]]:
    """Replace the part's body by a notice, and its content fields so they describe it."""
    nl = _newline(raw, part.header_start)
    kept = [raw[h.start:h.end] for h in part.headers
            if not h.hidden and h.name not in _CONTENT_FIELDS and not _has_bare_cr(raw[h.start:h.end])]
    if kept and not kept[-1].endswith((b"\n", b"\r")):
        kept[-1] += nl
    # Cut so that even RFC 2231 percent-encoding keeps the field line within 998 octets.
    name = part.filenames[0][:MAX_NAME_IN_FIELD] + ".txt" if part.filenames else ""
    fields = [b"Content-Type: text/plain; charset=us-ascii" + (b"; " + _param("name", name) if name else b""),
              b"Content-Transfer-Encoding: 7bit"]
    dispositions = part.header_values("content-disposition")
    if name or dispositions:
        kind = dispositions[0].split(b";", 1)[0].strip().lower() if dispositions else b"attachment"
        kind = kind if kind in (b"inline", b"attachment") else b"attachment"
        fields.append(b"Content-Disposition: " + kind + (b"; " + _param("filename", name) if name else b""))
    header = b"".join(kept) + b"".join(f + nl for f in fields)
    if part.header_end == part.body_start:  # the part had no blank line before its body
        header += nl
    lines = _notice_lines(verdict, part.section)
    if part.filenames:
        lines.append("Original file name: " + _ascii(part.filenames[0]))
    body = nl.join(line.encode("ascii") for line in lines) + nl
    return [(part.header_start, part.header_end, header), (part.body_start, part.body_end, body)]


def _has_bare_cr(field: bytes) -> bool:
    return b"\r" in field.replace(b"\r\n", b"")


def _param(name: str, value: str) -> bytes:
    """A parameter, quoted when ASCII-safe, else RFC 2231 §4 ``name*=utf-8''...``."""
    if value.isascii() and value.isprintable() and not any(c in value for c in '"\\'):
        return f'{name}="{value}"'.encode("ascii")
    from urllib.parse import quote

    return f"{name}*=utf-8''{quote(value, safe='')}".encode("ascii")


def _splice(raw: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = []
    pos = 0
    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(raw[pos:start])
        out.append(replacement)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)


# ---------------------------------------------------------------- response.action = replace


def replacement_message(raw: bytes, verdict: Verdict) -> bytes:
    """A short notice that keeps From, To, Cc, Date, Subject and Message-ID. Deterministic."""
    nl = _newline(raw, 0)
    eol = b"\r" if nl == b"\r" else b"\n"
    start = _header_start(raw, eol)
    block = parse_header_block(raw, start, len(raw), eol)
    kept = [raw[h.start:h.end] for h in block.fields
            if not h.hidden and h.name in KEPT_ON_REPLACE and not _has_bare_cr(raw[h.start:h.end])]
    kept = [k if k.endswith((b"\n", b"\r")) else k + nl for k in kept]
    fields = [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=us-ascii", b"Content-Transfer-Encoding: 7bit"]
    lines = _notice_lines(verdict, None)
    lines.append("The original message was withheld.")
    body = nl.join(line.encode("ascii") for line in lines) + nl
    return b"".join(kept) + b"".join(f + nl for f in fields) + nl + body


def _notice_lines(verdict: Verdict, section: str | None) -> list[str]:
    """The notice text; ``section`` limits it to what was found in and under that part."""
    def inside(path: str) -> bool:
        top = path.split("/", 1)[0]
        return section is None or top == section or top.startswith(section + ".") or not path

    names = sorted({f.name for f in verdict.findings if inside(f.part) and not f.is_policy})
    blocked = sorted({f.name for f in verdict.findings if inside(f.part) and f.is_policy})
    reasons = sorted({i.reason.value for i in verdict.incomplete if inside(i.part)})
    lines = ["This part was removed by mailguard." if section is not None else "This message was replaced by mailguard."]
    for what, listing in (("It contains malware", names), ("Its file type is blocked by policy", blocked)):
        listed = ", ".join(_ascii(n) for n in listing)
        if listing and len(listed) <= FOLD_AT - len(what) - 3:
            lines.append(f"{what}: {listed}.")
        elif listing:  # one name per line keeps every line short (RFC 5322 §2.1.1)
            lines.append(f"{what}:")
            lines.extend("  " + _ascii(n) for n in listing)
    if reasons and not (names or blocked):
        lines.append("It could not be scanned (" + ", ".join(reasons) + ") and policy blocks such content.")
    return lines


# ---------------------------------------------------------------- tags and subject


def result_value(verdict: Verdict) -> str:
    """The ``X-MailGuard-Result`` value (docs/architecture.md#what-a-scanned-message-looks-like)."""
    if verdict.acted_on:
        # Policy findings apart from detections: ``blocked; policy="Policy.BlockedAttachment.EXE"``,
        # or ``infected; detections="…"; policy="…"`` when a message has both.
        value = "infected; detections=" + _quoted(verdict.detection_names) if verdict.detection_names else "blocked"
        if verdict.policy_names:
            value += "; policy=" + _quoted(verdict.policy_names)
        return value
    if verdict.status is Status.UNSCANNED:
        return f'unscanned; reason="{", ".join(verdict.reasons)}"'
    return "clean"


def _quoted(names: list[str]) -> str:
    return '"' + ", ".join(_ascii(n).replace('"', "'").replace("\\", "/") for n in names) + '"'


def tag(raw: bytes, verdict: Verdict, policy: Policy) -> bytes:
    """Add the result header and the subject prefix as the policy asks; else return ``raw`` itself."""
    want_tag = verdict.status is Status.UNSCANNED or policy.tag_received == "all" or (
        policy.tag_received == "infected" and verdict.acted_on
    )
    want_subject = verdict.acted_on and policy.subject_received
    if not (want_tag or want_subject):
        return raw
    nl = _newline(raw, 0)
    eol = b"\r" if nl == b"\r" else b"\n"
    start = _header_start(raw, eol)
    block = parse_header_block(raw, start, len(raw), eol)
    edits: list[tuple[int, int, bytes]] = []
    insert = b""
    if want_tag:
        # A result header the sender wrote must not survive next to ours.
        edits += [(h.start, h.end, b"") for h in block.fields if h.name == RESULT_HEADER.lower() and not h.hidden]
        insert += _folded(RESULT_HEADER, result_value(verdict), nl)
    if want_subject:
        prefix = _render_subject_prefix(policy.subject_template, verdict)
        subject = next((h for h in block.fields if h.name == "subject" and not h.hidden), None)
        if subject is None:
            insert += _folded("Subject", prefix, nl)
        elif not _subject_starts_with(raw, subject.start, prefix):  # tagged twice: one prefix
            edits.append(_subject_edit(raw, subject.start, prefix, nl, eol))
    if insert:
        edits.append(_at_block_end(raw, block.end, insert, nl))
    return _splice(raw, edits)


def tls_value(problems: tuple[str, ...] | list[str]) -> str:
    """The ``X-MailGuard-TLS`` value for a server certificate that policy accepted despite ``problems``."""
    return "upstream certificate accepted by policy despite: " + ", ".join(_ascii(p) for p in problems)


def add_header(raw: bytes, name: str, value: str) -> bytes:
    """``raw`` with ``name: value`` spliced in at the end of its top header block.

    Folded like the result header, in the message's own line-ending style; every other byte
    keeps its place. A field of that name the sender wrote is dropped, so ours is the only one.
    """
    nl = _newline(raw, 0)
    eol = b"\r" if nl == b"\r" else b"\n"
    block = parse_header_block(raw, _header_start(raw, eol), len(raw), eol)
    edits = [(h.start, h.end, b"") for h in block.fields if h.name == name.lower() and not h.hidden]
    edits.append(_at_block_end(raw, block.end, _folded(name, value, nl), nl))
    return _splice(raw, edits)


def _at_block_end(raw: bytes, at: int, fields: bytes, nl: bytes) -> tuple[int, int, bytes]:
    """The edit adding ``fields`` (whole, folded) at ``at``, the end of a header block."""
    if at > 0 and raw[at - 1] not in b"\r\n":  # the last field had no line ending
        fields = nl + fields
    return (at, at, fields)


def _render_subject_prefix(template: str, verdict: Verdict) -> str:
    names = ", ".join(verdict.finding_names)
    return template.replace("%DETECTIONNAME%", names).replace("%VIRUSNAME%", names)


def _value_start(raw: bytes, after_colon: int) -> int:
    """Where a field's value starts: past the blanks that follow its colon."""
    while after_colon < len(raw) and raw[after_colon] in b" \t":
        after_colon += 1
    return after_colon


def _subject_starts_with(raw: bytes, field_start: int, prefix: str) -> bool:
    return raw.startswith(_header_text(prefix), _value_start(raw, raw.index(b":", field_start) + 1))


def _subject_edit(raw: bytes, field_start: int, prefix: str, nl: bytes, eol: bytes) -> tuple[int, int, bytes]:
    """Insert ``prefix`` at the start of the Subject value; fold when the line would pass 998."""
    colon = raw.index(b":", field_start) + 1
    value_start = _value_start(raw, colon)
    line_end = raw.find(eol, value_start)
    first_line_len = (len(raw) if line_end == -1 else line_end) - field_start
    encoded = _header_text(prefix)
    if first_line_len + len(encoded) + 2 <= MAX_LINE and b" " not in encoded[MAX_LINE:]:
        return (colon, value_start, b" " + encoded + b" ")
    folded = _fold_words(encoded, len(b"Subject: "), nl)
    return (colon, value_start, b" " + folded + nl + b" ")


def _folded(name: str, value: str, nl: bytes) -> bytes:
    return name.encode("ascii") + b": " + _fold_words(_header_text(value), len(name) + 2, nl) + nl


def _fold_words(text: bytes, used: int, nl: bytes) -> bytes:
    """Fold at spaces (RFC 5322 §2.2.3) so lines stay near 78 and always within 998."""
    out = []
    width = used
    for i, word in enumerate(text.split(b" ")):
        word = word[: MAX_LINE - 1]
        if i and width + 1 + len(word) > FOLD_AT:
            out.append(nl + b" " + word)
            width = 1 + len(word)
        else:
            out.append((b" " if i else b"") + word)
            width += (1 if i else 0) + len(word)
    return b"".join(out)


def _header_text(text: str) -> bytes:
    """ASCII as is; anything else as RFC 2047 encoded words (one per chunk, so lines fold)."""
    if text.isascii():
        return text.encode("ascii")
    words = []
    data = text.encode("utf-8")
    chunk = 45  # 60 base64 characters per word keeps each word within 75 (RFC 2047 §2)
    while data:
        piece, data = data[:chunk], data[chunk:]
        while data and (data[0] & 0xC0) == 0x80:  # never split a UTF-8 sequence
            piece, data = piece + data[:1], data[1:]
        words.append(b"=?utf-8?b?" + base64.b64encode(piece) + b"?=")
    return b" ".join(words)


# ---------------------------------------------------------------- small helpers


def _newline(raw: bytes, at: int) -> bytes:
    """The message's line-ending style at ``at``: CRLF, LF, or CR for CR-only mail."""
    nl = raw.find(b"\n", at)
    if nl == -1:
        return b"\r" if b"\r" in raw else b"\r\n"
    return b"\r\n" if nl > 0 and raw[nl - 1] == 0x0D else b"\n"


def _header_start(raw: bytes, eol: bytes) -> int:
    if raw.startswith(b"From "):  # an mbox separator left on top is not a header
        nl = raw.find(eol)
        return len(raw) if nl == -1 else nl + 1
    return 0


def _ascii(text: str) -> str:
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else "?" for c in text)[:MAX_NAME_IN_NOTICE]
