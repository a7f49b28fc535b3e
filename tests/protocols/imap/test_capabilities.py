from mailguard.protocols.imap.capabilities import capabilities_in, rewrite_capabilities


def test_untagged_capability_is_filtered_by_allow_list() -> None:
    raw = (
        b"* CAPABILITY IMAP4rev1 LITERAL+ COMPRESS=DEFLATE X-UNKNOWN-EXT NOTIFY UTF8=ACCEPT PREVIEW "
        b"AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=GSSAPI IDLE BINARY QRESYNC APPENDLIMIT=100\r\n"
    )
    assert rewrite_capabilities(raw) == (
        b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=SCRAM-SHA-256 AUTH=PLAIN IDLE BINARY APPENDLIMIT=100\r\n"
    )


def test_capability_codes_in_greeting_and_login_ok() -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1 STARTTLS COMPRESS=DEFLATE] Dovecot ready.\r\n"
    assert rewrite_capabilities(greeting) == b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n"
    login = b"a OK [CAPABILITY IMAP4rev1 LITERAL+ COMPRESS=DEFLATE] Logged in\r\n"
    assert rewrite_capabilities(login) == b"a OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in\r\n"
    assert rewrite_capabilities(greeting, remove=frozenset({"STARTTLS"})) == (
        b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"
    )


def test_capabilities_in() -> None:
    assert capabilities_in(b"* CAPABILITY A B\r\n") == [b"A", b"B"]
    assert capabilities_in(b"a OK [CAPABILITY A] x\r\n") == [b"A"]
    assert capabilities_in(b"a OK done\r\n") is None


def test_other_responses_are_untouched() -> None:
    raw = b"* 1 FETCH (BODY[] {24}\r\n[CAPABILITY COMPRESS=X]\r\n)\r\n"
    assert rewrite_capabilities(raw) == raw
