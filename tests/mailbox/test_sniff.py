from mailguard.mailbox.sniff import FileFormat, sniff_bytes
from tests.mailbox.fixtures import mbox_bytes, message


def test_kinds():
    assert sniff_bytes(mbox_bytes([message(1)]), complete=True) is FileFormat.MBOX
    assert sniff_bytes(message(1), complete=True) is FileFormat.MESSAGE
    assert sniff_bytes(b"Received: from x\n\tby y\nSubject: s\n", complete=True) is FileFormat.MESSAGE  # no body
    assert sniff_bytes(b"", complete=True) is FileFormat.EMPTY
    assert sniff_bytes(b"// <!-- <mdb:mork:z v=\"1.4\"/> -->\n", complete=True) is FileFormat.CLIENT_INDEX


def test_things_that_are_not_mail():
    for data in [
        b"Note: not mail\n\ntext",           # a header-like line, but no mail field
        b"From nobody in particular\n\n",    # From without a date
        b"\tSubject: folded first\n\n",
        b"Subject: x\0\n\n",                 # NUL in the header
        bytes(range(256)),
    ]:
        assert sniff_bytes(data, complete=True) is FileFormat.UNKNOWN, data
    # a header that does not end within the sniffed bytes is not recognised
    assert sniff_bytes(b"Subject: x\n" + b"X-A: b\n" * 100, complete=False) is FileFormat.UNKNOWN
