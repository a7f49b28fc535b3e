"""The demo mailbox: a few clean messages (one with an attachment) and a few carrying EICAR.

EICAR is the industry's harmless test file: every scanner detects it, by agreement. The string is
assembled at run time so that this source file is not itself reported by scanners that read it.
"""

from __future__ import annotations

import base64
import io
import zipfile
from dataclasses import dataclass

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@dataclass(frozen=True)
class DemoMessage:
    uid: str
    subject: str
    infected: bool
    raw: bytes  # CRLF line ends, as on the wire (RFC 1939 §11 counts octets this way)


def _headers(n: int, subject: str, extra: str = "") -> str:
    return (
        f"From: Demo Sender <sender@demo.invalid>\r\n"
        f"To: You <you@demo.invalid>\r\n"
        f"Date: Mon, 02 Mar 2026 09:{n:02d}:00 +0000\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <demo-{n}@demo.invalid>\r\n"
        f"MIME-Version: 1.0\r\n{extra}"
    )


def _b64(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _with_attachment(n: int, subject: str, text: str, filename: str, mime: str, payload: bytes) -> bytes:
    boundary = f"demo-boundary-{n}"
    return (
        _headers(n, subject, f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n')
        + "\r\n"
        + f"--{boundary}\r\n"
        + "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + text
        + f"\r\n--{boundary}\r\n"
        + f'Content-Type: {mime}; name="{filename}"\r\n'
        + f'Content-Disposition: attachment; filename="{filename}"\r\n'
        + "Content-Transfer-Encoding: base64\r\n\r\n"
        + _b64(payload)
        + f"\r\n--{boundary}--\r\n"
    ).encode()


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 3, 2, 9, 0, 0)), data)
    return buffer.getvalue()


def sample_mailbox() -> list[DemoMessage]:
    """The same messages, byte for byte, on every run."""
    welcome = (
        _headers(1, "Welcome to the mailguard demo", "Content-Type: text/plain; charset=utf-8\r\n")
        + "\r\nHello,\r\n\r\nThis message is clean: it reaches you byte for byte unchanged.\r\n"
        + ".A line starting with a dot, to show POP3 dot-stuffing survives the trip.\r\n"
    ).encode()
    report = _with_attachment(
        2, "Quarterly figures (clean attachment)", "The figures are attached.\r\n",
        "figures.csv", "text/csv", b"quarter,revenue\r\nQ1,1200\r\nQ2,1350\r\n",
    )
    body_eicar = (
        _headers(3, "Test file in the body", "Content-Type: text/plain; charset=us-ascii\r\n")
        + "\r\n"
        + EICAR.decode()
        + "\r\n"
    ).encode()
    invoice = _with_attachment(
        4, "Invoice 2291 (infected attachment)", "Please find the invoice attached.\r\n",
        "invoice.com", "application/octet-stream", EICAR,
    )
    parcel = _with_attachment(
        5, "Your parcel is waiting (infected zip)", "Open the attached label to collect it.\r\n",
        "label.zip", "application/zip", _zip("label.com", EICAR),
    )
    return [
        DemoMessage("demo-0001", "Welcome to the mailguard demo", False, welcome),
        DemoMessage("demo-0002", "Quarterly figures (clean attachment)", False, report),
        DemoMessage("demo-0003", "Test file in the body", True, body_eicar),
        DemoMessage("demo-0004", "Invoice 2291 (infected attachment)", True, invoice),
        DemoMessage("demo-0005", "Your parcel is waiting (infected zip)", True, parcel),
    ]
