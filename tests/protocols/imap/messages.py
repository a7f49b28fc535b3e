"""Test messages shared by the IMAP tests."""

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

SIMPLE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n.\r\n..leading dots\r\nbye\r\n"
)

NESTED = (
    b"From: a@example.com\r\n"
    b"Subject: nested\r\n"
    b"X-Priority: 3\r\n"
    b"  (folded)\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"first part\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.com\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>inner</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream; name=\"e.com\"\r\n"
    b"Content-Disposition: attachment; filename=\"e.com\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNU\r\n"
    b"LUZJTEUhJEgrSCo=\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


def big_clean(size: int = 300_000) -> bytes:
    """A multipart message with a base64 attachment of ``size`` pseudo-random bytes and a nested message."""
    import base64
    import random

    payload = random.Random(size).randbytes(size)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"From: Carol <carol@example.com>\r\nTo: dave@example.com\r\nSubject: big\r\n"
        b"Date: Tue, 2 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"==big==\"\r\n\r\n"
        b"--==big==\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"caf=C3=A9 au lait=\r\n and more\r\n"
        b"--==big==\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: inner@example.com\r\nSubject: inner\r\n\r\ninner body\r\n"
        b"--==big==\r\nContent-Type: application/octet-stream; name=data.bin\r\n"
        b"Content-Disposition: attachment; filename=data.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--==big==--\r\n"
    )


CLEAN_NESTED = NESTED.replace(
    b"WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNU\r\nLUZJTEUhJEgrSCo=",
    b"aGFybWxlc3MgYnl0ZXM=",
).replace(b'name="e.com"', b'name="h.bin"').replace(b'filename="e.com"', b'filename="h.bin"')
