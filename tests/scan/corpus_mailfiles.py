"""Corpus cases: mail files and encoded text files that arrive as ordinary attachments.

An .eml or an mbox attached as application/octet-stream is walked as a message when
``threatsense.objects.email-files`` (part paths such as ``2/fwd.eml/2``); a uuencoded,
BinHex, base64 or HTML file attached as anything gives the files it encodes
(``2/eicar.hqx/eicar.com``). Debian's clamav-testfiles that are such files are attached
as they are; their EICAR twins need no package. Clean look-alikes: text that starts like
a header but is prose, a harmless message or mbox, harmless encoded files.
"""

from __future__ import annotations

import base64
import io
import zipfile
from urllib.parse import quote_from_bytes

from tests.scan.corpus import (
    CLAM_NAME,
    GREETING,
    TESTFILES,
    attachment,
    case,
    message,
    single,
    text_part,
)
from tests.scan.encoders import b64_lines, binhex, uuencode, yenc
from tests.scan.reference_detector import EICAR, EICAR_NAME

MBOX_FROM = b"From alice@example.org Tue Apr  1 10:00:00 2025\n"

# clamav-testfiles that hold clam.exe in a mail file or an encoded file, and where it is found
# when the file is attached as part 2 under its own name (IMAP section, then the file's inside).
CLAM_FILES = {
    "clam.exe.mbox.base64": "1",      # an mbox; its one message's body is base64 clam.exe
    "clam.exe.mbox.uu": "1",          # the same with Content-Transfer-Encoding: x-uuencode
    "clam.mail": "2",                 # a multipart message; clam.exe is its part 2
    "clam.exe.binhex": "clam.exe",    # a BinHex 4.0 file; the name comes from its header
    "clam.exe.html": "data-uri",      # <a href="data:application/octet-stream;base64,...">
}


def _eml(parts: list[bytes]) -> bytes:
    return message(parts, boundary=b"=_mg_inner")


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


# ---------------------------------------------------------------- infected: clamav-testfiles

for _name, _inside in CLAM_FILES.items():
    @case(f"clam_testfile_attached_{_name}", infected=CLAM_NAME, parts={f"2/{_name}/{_inside}"},
          needs=("clamav-testfiles",))
    def _(name: str = _name) -> bytes:
        return message([GREETING, attachment((TESTFILES / name).read_bytes(), name)])


@case("clam_mail_attached_under_a_neutral_name", infected=CLAM_NAME, parts={"2/scan0001.dat/2"},
      needs=("clamav-testfiles",))
def _() -> bytes:
    # By content, not by name or type: nothing here says "mail".
    return message([GREETING, attachment((TESTFILES / "clam.mail").read_bytes(), "scan0001.dat")])


# ---------------------------------------------------------------- infected: mail files


def _eicar_eml() -> bytes:
    return _eml([GREETING, attachment(EICAR, "eicar.com")])


@case("eicar_eml_attached_as_octet_stream", infected=EICAR_NAME, parts={"2/fwd.eml/2"})
def _() -> bytes:
    return message([GREETING, attachment(_eicar_eml(), "fwd.eml")])


@case("eicar_eml_attached_without_a_name", infected=EICAR_NAME, parts={"2/2"})
def _() -> bytes:
    return message([GREETING, b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                    + b64_lines(_eicar_eml())])


@case("eicar_eml_attached_as_text_plain", infected=EICAR_NAME, parts={"2/fwd.txt/2"})
def _() -> bytes:
    return message([GREETING, attachment(_eicar_eml(), "fwd.txt", "text/plain")])


@case("eicar_eml_lf_only_attached", infected=EICAR_NAME, parts={"2/fwd.eml/2"})
def _() -> bytes:
    return message([GREETING, attachment(_lf(_eicar_eml()), "fwd.eml")])


@case("eicar_eml_in_eml_attached", infected=EICAR_NAME, parts={"2/outer.eml/2/inner.eml/2"})
def _() -> bytes:
    outer = _eml([text_part(b"see inner\r\n"), attachment(_eicar_eml(), "inner.eml")])
    return message([GREETING, attachment(outer, "outer.eml")])


@case("eicar_second_message_of_an_mbox", infected=EICAR_NAME, parts={"2/box.mbox/message-2/2"})
def _() -> bytes:
    first = MBOX_FROM + _lf(single(b"From the desk of Alice: nothing here.\r\n")) + b"\n"
    second = MBOX_FROM + _lf(_eicar_eml()) + b"\n"
    return message([GREETING, attachment(first + second, "box.mbox")])


@case("eicar_eml_inside_zip", infected=EICAR_NAME, parts={"2/mail.zip/fwd.eml/2"}, needs=("containers",))
def _() -> bytes:
    return message([GREETING, attachment(_zip("fwd.eml", _eicar_eml()), "mail.zip", "application/zip")])


@case("eicar_bare_mime_entity_attached", infected=EICAR_NAME, parts={"2/part.bin/1"})
def _() -> bytes:
    # A saved MIME part: Content-* fields only, then its base64 body.
    entity = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64_lines(EICAR)
    return message([GREETING, attachment(entity, "part.bin")])


@case("eml_attachment_not_looked_into_when_email_files_off", policy={"email_files": False})
def _() -> bytes:
    return message([GREETING, attachment(_eicar_eml(), "fwd.eml")])


# ---------------------------------------------------------------- infected: encoded text files


@case("eicar_uuencoded_file_attached", infected=EICAR_NAME, parts={"2/eicar.uue/eicar.com"})
def _() -> bytes:
    return message([GREETING, attachment(uuencode(EICAR, "eicar.com", b"\r\n"), "eicar.uue")])


@case("eicar_begin_base64_file_attached", infected=EICAR_NAME, parts={"2/eicar.b64/eicar.com"})
def _() -> bytes:
    return message([GREETING, attachment(b"begin-base64 644 eicar.com\n" + _lf(b64_lines(EICAR)) + b"====\n",
                                         "eicar.b64")])


@case("eicar_bare_base64_file_attached", infected=EICAR_NAME, parts={"2/eicar.txt/base64"})
def _() -> bytes:
    return message([GREETING, attachment(b64_lines(EICAR, width=64), "eicar.txt")])


@case("eicar_yenc_file_attached", infected=EICAR_NAME, parts={"2/eicar.yenc/eicar.com"})
def _() -> bytes:
    return message([GREETING, attachment(yenc(EICAR, "eicar.com"), "eicar.yenc")])


@case("eicar_binhex_file_attached", infected=EICAR_NAME, parts={"2/eicar.hqx/eicar.com"})
def _() -> bytes:
    return message([GREETING, attachment(binhex(EICAR, "eicar.com"), "eicar.hqx", "application/mac-binhex40")])


@case("eicar_data_uri_html_file_attached", infected=EICAR_NAME, parts={"2/page.html/data-uri"})
def _() -> bytes:
    html = b'<html><body><a href="DaTa:application/octet-stream;base64,' + base64.b64encode(EICAR) + b'">x</a>'
    return message([GREETING, attachment(html, "page.html")])


@case("eicar_data_uri_in_html_body", infected=EICAR_NAME, parts={"1/data-uri"})
def _() -> bytes:
    html = b"<p>Click <a href='data:," + quote_from_bytes(EICAR).encode() + b"'>here</a></p>\r\n"
    return single(html, b"Content-Type: text/html; charset=utf-8\r\n")


# ---------------------------------------------------------------- clean look-alikes


@case("clean_text_attachment_starting_with_from_prose")
def _() -> bytes:
    note = b"From: the desk of the CEO\r\nDear all,\r\n\r\nthe office is closed on Friday.\r\n"
    return message([GREETING, attachment(note, "memo.txt"), attachment(note, "memo2.txt", "text/plain")])


@case("clean_header_shaped_note_attached")
def _() -> bytes:
    # Shaped like a message, so it is walked as one: the walk finds nothing and flags nothing.
    note = b"From: Alice\r\nTo: the team\r\nSubject: minutes\r\n\r\nWe agreed on the budget.\r\n"
    return message([GREETING, attachment(note, "minutes.txt")])


@case("clean_text_starting_with_from_space")
def _() -> bytes:
    return message([GREETING, attachment(b"From here on we meet on Mondays.\nNo date on this line.\n", "plan.txt")])


@case("clean_harmless_eml_attached")
def _() -> bytes:
    inner = _eml([GREETING, attachment(b"%PDF-1.4 harmless\n", "figures.pdf", "application/pdf")])
    return message([GREETING, attachment(inner, "fwd.eml")])


@case("clean_harmless_mbox_attached")
def _() -> bytes:
    box = MBOX_FROM + _lf(single(b"hello\r\n>From the archive, quoted as mbox does.\r\n")) + b"\n" + MBOX_FROM + _lf(
        single(b"second message\r\n"))
    return message([GREETING, attachment(box, "box.mbox")])


@case("clean_html_attachment_with_inline_image")
def _() -> bytes:
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    html = (b'<html><head><meta name="description" content="metadata: none"></head><body style="color:red">'
            b'<img src="data:image/png;base64,' + base64.b64encode(png) + b'"> data: nothing here</body></html>')
    return message([GREETING, attachment(html, "page.html", "text/html")])


@case("clean_harmless_encoded_files_attached")
def _() -> bytes:
    notes = b"just some notes\n" * 20
    return message([GREETING, attachment(uuencode(notes, "notes.txt"), "notes.uue"),
                    attachment(binhex(notes, "notes.txt"), "notes.hqx"),
                    attachment(b64_lines(notes), "notes.b64"),
                    attachment(b"deadbeefcafebabe0123456789abcdef\n" * 8, "hex.txt")])


@case("clean_csv_with_colons_attached")
def _() -> bytes:
    rows = b"".join(b"id%d:name:value:%d:12:30:45\r\n" % (i, i) for i in range(500))
    return message([GREETING, attachment(rows, "data.csv", "text/csv"), attachment(rows, "data.bin")])


@case("clean_prose_message_mentions_data_uris")
def _() -> bytes:
    return single(b"Metadata: see the spec. A data: URI looks like data:,hello or DATA:text/plain,hi.\r\n")
