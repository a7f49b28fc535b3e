from mailguard.mailbox.headers import MAX_HEADER_BLOCK, summary_fields


def test_fields_are_unfolded_and_decoded():
    raw = (b"Subject: =?utf-8?q?caf=C3=A9?=\n =?utf-8?b?IGNsdWI=?=\nMessage-ID:\n <a@b>\n"
           b"subject: second one is ignored\n\nSubject: in the body\n")
    assert summary_fields(raw) == ("<a@b>", "café club")


def test_body_and_damaged_headers_give_empty_fields():
    assert summary_fields(b"From: a\n\nSubject: body\n") == ("", "")
    assert summary_fields(b"Subject: =?bogus-charset?q?x?=\n\n") == ("", "=?bogus-charset?q?x?=")
    assert summary_fields(b"\xff\xfe\0") == ("", "")


def test_only_the_capped_header_block_is_read():
    raw = b"X-Long: " + b"a" * MAX_HEADER_BLOCK + b"\nSubject: late\n\n"
    assert summary_fields(raw) == ("", "")
