"""The corpus' mail cases: EICAR in every encoding and MIME trick, clamav-testfiles, clean look-alikes.

Each function builds one message; ``@case`` registers it in ``tests.scan.corpus.CASES``
with the verdict it must get (part paths are IMAP section numbers, RFC 3501 §6.4.5).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from mailguard.scan.verdict import Reason
from tests.scan.corpus import (
    CLAM_NAME,
    GREETING,
    HEAD,
    TESTFILES,
    attachment,
    case,
    clam_exe,
    message,
    nested,
    part,
    single,
    text_part,
)
from tests.scan.encoders import b64_lines, binhex, uuencode, yenc
from tests.scan.reference_detector import EICAR, EICAR_NAME

# ---------------------------------------------------------------- infected: encodings


@case("eicar_7bit_body", infected=EICAR_NAME, parts={"1"})
def _() -> bytes:
    return single(EICAR + b"\r\n")


@case("eicar_trailing_whitespace", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, attachment(EICAR + b"   \t\r\n", "eicar.com")])


@case("eicar_base64", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, attachment(EICAR, "eicar.com")])


@case("eicar_base64_garbage", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    text = base64.b64encode(EICAR)
    noisy = b"".join(bytes((c,)) + b"#:.%-_"[i % 6:i % 6 + 1] for i, c in enumerate(text))
    return message([GREETING, part(noisy[:50] + b"\r\n" + noisy[50:] + b"\r\n",
                                   b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n")])


@case("eicar_base64_whitespace_vt_odd_lines", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    text = base64.b64encode(EICAR)
    body = b"\r\n".join(text[i:i + 7] + b" \x0b\t" for i in range(0, len(text), 7)) + b"\r\n"
    return message([GREETING, part(body, b"Content-Type: application/x-msdownload\r\nContent-Transfer-Encoding: base64\r\n")])


@case("eicar_base64_then_data_after_padding", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    # EICAR is 68 bytes, so its base64 ends in "=": a client that stops at the padding sees EICAR,
    # one that goes on sees EICAR plus an innocent tail (mime-is-broken "junk_after_eq").
    return message([GREETING, part(base64.b64encode(EICAR) + base64.b64encode(b"innocent tail, nothing to see") + b"\r\n",
                                   b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n")])


@case("eicar_base64_after_decoy_padding", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    # A client that restarts decoding after each padding sees a decoy, then EICAR after it;
    # "stop at padding" sees only the decoy. The restart reading must be scanned too.
    decoy = base64.b64encode(b"hi")  # "aGk="
    return message([GREETING, part(decoy + b"\r\n" + base64.b64encode(EICAR) + b"\r\n",
                                   b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n")])


@case("eicar_quoted_printable", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, part(binascii.b2a_qp(EICAR, istext=False) + b"\r\n",
                                   b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n")])


@case("eicar_duplicate_cte_ghost", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    # F-Secure's ghost.exe: base64 and quoted-printable both declared
    # (docs/pitfalls.md#conflicting-headers).
    return message([GREETING, part(b64_lines(EICAR), b'Content-Type: application/octet-stream; name="ghost.exe"\r\n'
                                   b"Content-Transfer-Encoding: quoted-printable\r\nContent-Transfer-Encoding: base64\r\n")])


@case("eicar_uuencode_inline", infected=EICAR_NAME, parts={"1/eicar.com"})
def _() -> bytes:
    return single(b"Here it is:\r\n\r\n" + uuencode(EICAR, "eicar.com", b"\r\n") + b"\r\nbye\r\n")


@case("eicar_x_uuencode_cte", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, part(uuencode(EICAR, "eicar.com", b"\r\n"),
                                   b'Content-Type: application/octet-stream; name="eicar.com"\r\n'
                                   b"Content-Transfer-Encoding: x-uuencode\r\n")])


@case("eicar_begin_base64_inline", infected=EICAR_NAME, parts={"1/eicar.com"})
def _() -> bytes:
    return single(b"begin-base64 644 eicar.com\r\n" + b64_lines(EICAR) + b"====\r\n")


@case("eicar_yenc_inline", infected=EICAR_NAME, parts={"1/eicar.com"})
def _() -> bytes:
    return single(b"yEnc follows\r\n" + yenc(EICAR, "eicar.com"))


@case("eicar_binhex_inline", infected=EICAR_NAME, parts={"1/eicar.com"})
def _() -> bytes:
    return single(b"A Mac file:\r\n\r\n" + binhex(EICAR, "eicar.com"))


@case("eicar_bare_lf", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, attachment(EICAR, "eicar.com")]).replace(b"\r\n", b"\n")


@case("eicar_cr_only", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, attachment(EICAR, "eicar.com")]).replace(b"\r\n", b"\r")


@case("eicar_no_content_type_headers", infected=EICAR_NAME, parts={"1"})
def _() -> bytes:
    return b"From: a@example.org\r\nSubject: x\r\n\r\n" + EICAR


# ---------------------------------------------------------------- infected: names


@case("eicar_rfc2231_continued_name", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, part(b64_lines(EICAR), b"Content-Type: application/octet-stream;\r\n"
                                   b" name*1=\".com\"; name*0*=utf-8''%E2%82%ACicar\r\n"
                                   b"Content-Disposition: attachment; filename*=UTF-16LE''%65%00%78%00%65%00\r\n"
                                   b"Content-Transfer-Encoding: base64\r\n")])


@case("eicar_rfc2047_name_inside_quotes", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, part(b64_lines(EICAR), b'Content-Type: application/octet-stream; name="=?utf-8?B?ZWljYXIuY29t?="\r\n'
                                   b"Content-Transfer-Encoding: base64\r\n")])


# ---------------------------------------------------------------- infected: structure


def _eicar_part() -> bytes:
    return attachment(EICAR, "eicar.com")


@case("eicar_nested_rfc822_three_levels", infected=EICAR_NAME, parts={"2.2.2.2"})
def _() -> bytes:
    inner = message([GREETING, _eicar_part()], boundary=b"=_mg_level3")
    return nested(nested(nested(inner)))


@case("eicar_rfc822_nonmultipart", infected=EICAR_NAME, parts={"2.1"})
def _() -> bytes:
    return nested(single(EICAR, b"Content-Type: text/plain\r\n"))


@case("eicar_rfc822_base64_encoded", infected=EICAR_NAME)
def _() -> bytes:
    inner = message([GREETING, _eicar_part()], boundary=b"=_mg_inner")
    return message([GREETING, part(b64_lines(inner), b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n")])


@case("eicar_message_global", infected=EICAR_NAME, parts={"2.2"})
def _() -> bytes:
    inner = message([GREETING, _eicar_part()], boundary=b"=_mg_inner")
    return message([GREETING, part(inner, b"Content-Type: message/global\r\n")])


@case("eicar_missing_final_boundary", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, _eicar_part()]).rsplit(b"--=_mg_outer--", 1)[0]


@case("eicar_two_content_types_second_boundary", infected=EICAR_NAME)
def _() -> bytes:
    body = b"--real\r\n" + GREETING + b"\r\n--real\r\n" + _eicar_part() + b"\r\n--real--\r\n"
    return HEAD + b'Content-Type: multipart/mixed; boundary="decoy"\r\nContent-Type: multipart/mixed; boundary="real"\r\n\r\n' + body


@case("eicar_duplicate_boundary_parameter", infected=EICAR_NAME)
def _() -> bytes:
    body = b"--real\r\n" + GREETING + b"\r\n--real\r\n" + _eicar_part() + b"\r\n--real--\r\n"
    return HEAD + b'Content-Type: multipart/mixed; boundary="decoy"; boundary="real"\r\n\r\n' + body


@case("eicar_rfc2231_boundary_conflict", infected=EICAR_NAME)
def _() -> bytes:
    body = b"--real\r\n" + GREETING + b"\r\n--real\r\n" + _eicar_part() + b"\r\n--real--\r\n"
    return HEAD + b"Content-Type: multipart/mixed; boundary=\"decoy\"; boundary*=utf-8''real\r\n\r\n" + body


@case("eicar_equal_nested_boundaries", infected=EICAR_NAME)
def _() -> bytes:
    inner = b'Content-Type: multipart/alternative; boundary="same"\r\n\r\n--same\r\n' + _eicar_part() + b"\r\n--same--\r\n"
    return message([GREETING, inner], boundary=b"same")


@case("eicar_substring_boundary_lenient", infected=EICAR_NAME)
def _() -> bytes:
    # "--bX" is no delimiter for boundary "b" under RFC 2046, but some clients split on it.
    body = b"--b\r\n" + GREETING + b"\r\n--bX\r\n" + _eicar_part() + b"\r\n--b--\r\n"
    return HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body


@case("eicar_padding_after_delimiter", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    return message([GREETING, _eicar_part()]).replace(b"--=_mg_outer\r\n", b"--=_mg_outer \t\r\n")


@case("eicar_part_after_close_delimiter", infected=EICAR_NAME)
def _() -> bytes:
    return message([GREETING], epilogue=b"--=_mg_outer\r\n" + _eicar_part() + b"\r\n--=_mg_outer--\r\n")


@case("eicar_uuencoded_in_preamble", infected=EICAR_NAME)
def _() -> bytes:
    return message([GREETING], preamble=uuencode(EICAR, "eicar.com", b"\r\n"))


@case("eicar_content_type_space_before_colon_folded", infected=EICAR_NAME, parts={"2"})
def _() -> bytes:
    body = b"--b1\r\n" + GREETING + b"\r\n--b1\r\n" + _eicar_part() + b"\r\n--b1--\r\n"
    return HEAD + b'Content-type :\r\n multipart/mixed;\r\n\tboundary="b1"\r\n\r\n' + body


@case("eicar_content_type_behind_bare_cr", infected=EICAR_NAME)
def _() -> bytes:
    body = b"--b1\r\n" + GREETING + b"\r\n--b1\r\n" + _eicar_part() + b"\r\n--b1--\r\n"
    return HEAD + b'X-Note: hi\rContent-Type: multipart/mixed; boundary="b1"\r\n\r\n' + body


@case("eicar_multipart_without_boundary", infected=EICAR_NAME, parts={"1"})
def _() -> bytes:
    return HEAD + b"Content-Type: multipart/mixed\r\n\r\n" + EICAR + b"\r\n"


@case("eicar_multipart_digest", infected=EICAR_NAME, parts={"1.1.2"})
def _() -> bytes:
    inner = message([GREETING, _eicar_part()], head=b"Subject: digest entry\r\n", boundary=b"=_mg_entry")
    digest = b'Content-Type: multipart/digest; boundary="dg"\r\n\r\n--dg\r\n\r\n' + inner + b"\r\n--dg--\r\n"
    return message([digest])


# ---------------------------------------------------------------- infected: clamav-testfiles


@case("clam_exe_attached", infected=CLAM_NAME, parts={"2"}, needs=("clamav-testfiles",))
def _() -> bytes:
    return message([GREETING, attachment(clam_exe(), "clam.exe", "application/x-msdownload")])


@case("clam_exe_binhex_file_inline", infected=CLAM_NAME, parts={"1/clam.exe"}, needs=("clamav-testfiles",))
def _() -> bytes:
    return single(b"Mac attachment:\r\n" + (TESTFILES / "clam.exe.binhex").read_bytes())


@case("clam_exe_mbox_uu_file", infected=CLAM_NAME, needs=("clamav-testfiles",))
def _() -> bytes:
    return (TESTFILES / "clam.exe.mbox.uu").read_bytes()


@case("clam_exe_mbox_base64_file", infected=CLAM_NAME, needs=("clamav-testfiles",))
def _() -> bytes:
    return (TESTFILES / "clam.exe.mbox.base64").read_bytes()


# ---------------------------------------------------------------- clean


@case("clean_plain_text")
def _() -> bytes:
    return single(b"Hello Bob,\r\n\r\nsee you tomorrow.\r\n")


@case("clean_prose_mentions_eicar")
def _() -> bytes:
    return message([text_part(b"Our scanner test uses the string " + EICAR + b" which you should not see flagged "
                              b"when it is merely quoted inside a sentence.\r\n")])


@case("clean_harmless_eicar_txt")
def _() -> bytes:
    return message([GREETING, attachment(b"This file is called eicar.txt but is only a note.\r\n", "eicar.txt", "text/plain")])


@case("clean_truncated_eicar")
def _() -> bytes:
    return message([GREETING, attachment(EICAR[:60], "eicar-truncated.txt", "text/plain")])


@case("clean_eicar_split_over_two_parts")
def _() -> bytes:
    return message([attachment(EICAR[:34], "a.bin"), attachment(EICAR[34:], "b.bin")])


@case("clean_non_ascii_names")
def _() -> bytes:
    return message([GREETING,
                    part(b64_lines("Годовой отчёт".encode()), b'Content-Type: text/plain; charset=utf-8;\r\n'
                         b' name="=?utf-8?B?0JPQvtC00L7QstC+0Lkg0L7RgtGH0ZHRgi50eHQ=?="\r\nContent-Transfer-Encoding: base64\r\n'),
                    part(b64_lines(b"\x89PNG\r\n\x1a\n" + bytes(200)), b"Content-Type: image/png\r\n"
                         b"Content-Disposition: attachment; filename*=utf-8''%E5%9B%BE%E7%89%87.png\r\n"
                         b"Content-Transfer-Encoding: base64\r\n")])


@case("clean_html_alternative")
def _() -> bytes:
    alt = (b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n--alt\r\n' + text_part(b"Hi\r\n")
           + b"\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           + b"<p style=3D\"color:red\">Hi</p>=\r\n\r\n--alt--\r\n")
    return message([alt])


@case("clean_huge_attachment")
def _() -> bytes:
    blob = hashlib.shake_256(b"mailguard corpus").digest(6 * 1024 * 1024)
    return message([GREETING, attachment(blob, "backup.bin")])


@case("clean_uuencoded_text_file")
def _() -> bytes:
    return single(b"notes:\r\n" + uuencode(b"just some notes\n" * 20, "notes.txt", b"\r\n"))


# ---------------------------------------------------------------- unscanned


@case("unscanned_message_partial", unscanned={Reason.UNSUPPORTED})
def _() -> bytes:
    return single(b"From: x\r\nSubject: part 1\r\n\r\nfirst fragment\r\n",
                  b'Content-Type: message/partial; id="abc@example.org"; number=1; total=2\r\n')


@case("unscanned_part_over_object_size", unscanned={Reason.LIMIT}, policy={"max_object_size": 4096})
def _() -> bytes:
    return message([GREETING, attachment(bytes(range(256)) * 40, "big.bin")])
