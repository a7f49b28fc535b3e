"""The IMAP proxy in front of a real Dovecot: the ways clients fetch, compared with Dovecot itself.

Clean messages must come out byte-identical in every fetch form (sections, partials, sizes,
structures cut by our code must equal the server's); infected ones must never leak, in any
form; IDLE keeps working; imaplib and fetchmail are the clients.
"""

from __future__ import annotations

import base64
import imaplib
import itertools
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailguard.protocols.imap.fetch_response import parse_fetch_response
from mailguard.protocols.imap.lexer import Lexer
from mailguard.protocols.imap.responses import ResponseReader
from mailguard.proxy.imap import ImapContext
from mailguard.proxy.imap_cache import RewriteCache
from mailguard.proxy.imap_listener import ImapRoute
from mailguard.scanpool.pool import ScanPool
from mailguard.scan.policy import Policy
from tests.peers import require
from tests.peers.dovecot import PASSWORD, Dovecot, running_dovecot
from tests.protocols.imap.harness import ProxyThread
from tests.protocols.imap.messages import CLEAN_NESTED, EICAR, NESTED, SIMPLE, big_clean

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

BIG = big_clean()
MESSAGES = [SIMPLE, CLEAN_NESTED, BIG, NESTED]  # UIDs 1..4; 4 is infected
CLEAN_UIDS = (1, 2, 3)
INFECTED_UID = 4
EICAR_B64 = base64.b64encode(EICAR)[:40]


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory, ca) -> Iterator[Dovecot]:  # type: ignore[no-untyped-def]
    require("dovecot")
    with running_dovecot(tmp_path_factory.mktemp("imap"), ca) as server:
        server.deliver("alice", MESSAGES)
        yield server


@pytest.fixture(scope="module")
def pool() -> Iterator[ScanPool]:
    scan_pool = ScanPool(Policy(), None, kind="thread", workers=1)
    yield scan_pool
    scan_pool.close()


def contexts(ca):  # type: ignore[no-untyped-def]
    upstream = ssl.create_default_context()
    ca.configure_trust(upstream)
    client_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", common_name="localhost").configure_cert(client_side)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    return upstream, client_side, trusting


@pytest.fixture(scope="module")
def proxy(dovecot: Dovecot, pool: ScanPool, ca, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:  # type: ignore[no-untyped-def]
    """IMAP with STARTTLS on both legs."""
    upstream, client_side, _ = contexts(ca)
    cache = RewriteCache(tmp_path_factory.mktemp("state") / "imap-cache")
    route = ImapRoute("127.0.0.1", dovecot.imap_port, client_tls=client_side, upstream_tls=upstream,
                      upstream_hostname="localhost")
    with ProxyThread(route, lambda: ImapContext(scanner=pool, server_id="dovecot:143", cache=cache)) as thread:
        yield thread


def direct(dovecot: Dovecot, ca) -> imaplib.IMAP4:  # type: ignore[no-untyped-def]
    client = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    client.starttls(contexts(ca)[2])
    client.login("alice", PASSWORD)
    status, data = client.select("INBOX")
    assert status == "OK", data
    return client


def through(proxy: ProxyThread, ca, starttls: bool = True) -> imaplib.IMAP4:  # type: ignore[no-untyped-def]
    client = imaplib.IMAP4("127.0.0.1", proxy.port)
    if starttls:
        client.starttls(contexts(ca)[2])
    client.login("alice", PASSWORD)
    status, data = client.select("INBOX")
    assert status == "OK", data
    return client


def fetch_items(client: imaplib.IMAP4, uid: int, items: str) -> dict[bytes, bytes]:
    """The data items of one UID FETCH answer, by item name as echoed."""
    status, data = client.uid("FETCH", str(uid), items)
    assert status == "OK", data
    raw = b"* "
    for index, piece in enumerate(data):
        if index and not isinstance(data[index - 1], tuple):
            break  # a second FETCH response (the answer's \Seen, sent apart): the answer is whole
        raw += piece[0] + b"\r\n" + piece[1] if isinstance(piece, tuple) else piece
    reader = ResponseReader()
    reader.receive_data(raw.replace(b" (", b" FETCH (", 1) + b"\r\n")  # imaplib drops the word FETCH
    found = {}
    for item in parse_fetch_response(reader.next_event()).items:
        found[item.key.upper()] = item.value if item.value and not item.raw_value.startswith(b"(") else item.raw_value
    return found


FORMS = [
    "(BODY.PEEK[])",
    "(BODY.PEEK[HEADER])",
    "(BODY.PEEK[TEXT])",
    "(BODY.PEEK[1])",
    "(BODY.PEEK[1.MIME])",
    "(BODY.PEEK[2])",
    "(BODY.PEEK[2.HEADER])",
    "(BODY.PEEK[2.TEXT])",
    "(BODY.PEEK[2.1])",
    "(BODY.PEEK[3])",
    "(BODY.PEEK[3.MIME])",
    "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])",
    "(BODY.PEEK[HEADER.FIELDS.NOT (FROM SUBJECT)])",
    "(RFC822.HEADER)",
    "(RFC822.SIZE)",
    "(BODY.PEEK[]<0.100>)",
    "(BODY.PEEK[]<100.1000000>)",
    "(BODY.PEEK[3]<7.70000>)",
    "(BINARY.PEEK[1])",
    "(BINARY.PEEK[3])",
    "(BINARY.SIZE[3])",
    "(BODYSTRUCTURE)",
    "(BODY)",
    "(ENVELOPE)",
    "(UID RFC822.SIZE INTERNALDATE)",  # not FLAGS: \\Recent belongs to one session
]


@pytest.mark.parametrize("uid", CLEAN_UIDS)
def test_clean_messages_are_byte_identical_in_every_fetch_form(dovecot: Dovecot, proxy: ProxyThread, ca, uid: int) -> None:  # type: ignore[no-untyped-def]
    left, right = direct(dovecot, ca), through(proxy, ca)
    try:
        for form in FORMS:
            assert fetch_items(right, uid, form) == fetch_items(left, uid, form), form
    finally:
        left.logout()
        right.logout()


def test_an_infected_message_never_leaks_in_any_form(proxy: ProxyThread, ca) -> None:  # type: ignore[no-untyped-def]
    client = through(proxy, ca)
    try:
        for form in FORMS + ["(RFC822.PEEK)", "(RFC822.TEXT)", "(BINARY.PEEK[])"]:
            for value in fetch_items(client, INFECTED_UID, form).values():
                assert EICAR not in value and EICAR_B64 not in value, form
        served = fetch_items(client, INFECTED_UID, "(BODY.PEEK[] RFC822.SIZE BINARY.SIZE[3] BINARY.PEEK[3])")
        assert int(served[b"RFC822.SIZE"]) == len(served[b"BODY[]"])
        assert int(served[b"BINARY.SIZE[3]"]) == len(served[b"BINARY[3]"])
        assert b"X-MailGuard-Result: infected" in served[b"BODY[]"]
    finally:
        client.logout()


def test_thunderbird_chunk_loop_joins_to_the_whole_message(dovecot: Dovecot, proxy: ProxyThread, ca) -> None:  # type: ignore[no-untyped-def]
    client = through(proxy, ca)
    try:
        for uid in (3, INFECTED_UID):
            whole = fetch_items(client, uid, "(UID RFC822.SIZE BODY.PEEK[])")
            chunks, offset = [], 0
            while True:
                answer = fetch_items(client, uid, f"(UID RFC822.SIZE BODY.PEEK[]<{offset}.65536>)")
                chunk = answer[f"BODY[]<{offset}>".encode()]
                chunks.append(chunk)
                assert answer[b"RFC822.SIZE"] == whole[b"RFC822.SIZE"]
                if len(chunk) < 65536:
                    break
                offset += 65536
            assert b"".join(chunks) == whole[b"BODY[]"]
            part = b""
            while True:  # part fetches in 393216-byte windows, as iOS does
                window = fetch_items(client, uid, f"(UID BODY.PEEK[3]<{len(part)}.393216>)")[f"BODY[3]<{len(part)}>".encode()]
                part += window
                if len(window) < 393216:
                    break
            assert part == fetch_items(client, uid, "(BODY.PEEK[3])")[b"BODY[3]"]
    finally:
        client.logout()
    left = direct(dovecot, ca)
    try:
        assert fetch_items(left, 3, "(BODY.PEEK[])")[b"BODY[]"] == BIG
    finally:
        left.logout()


def test_outlook_mutt_and_structure_first_clients(dovecot: Dovecot, proxy: ProxyThread, ca) -> None:  # type: ignore[no-untyped-def]
    client = through(proxy, ca)
    try:
        # Outlook: RFC822.PEEK (obsolete but sent), answered as RFC822, and BINARY.
        outlook = fetch_items(client, 2, "(UID RFC822.SIZE RFC822.PEEK)")
        assert outlook[b"RFC822"] == CLEAN_NESTED and int(outlook[b"RFC822.SIZE"]) == len(CLEAN_NESTED)
        assert fetch_items(client, 2, "(BINARY.PEEK[3])")[b"BINARY[3]"] == b"harmless bytes"
        # mutt: whole messages, all at once
        status, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        bodies = [piece[1] for piece in data if isinstance(piece, tuple)]
        assert bodies[:3] == MESSAGES[:3] and EICAR not in bodies[3]
        # everyone: BODYSTRUCTURE first, then the parts it announces, sizes matching
        for uid in (2, INFECTED_UID):
            structure = fetch_items(client, uid, "(BODYSTRUCTURE)")[b"BODYSTRUCTURE"]
            parts = Lexer(structure).read_node().items
            # the body parts come first, up to the multipart's subtype string
            for number, part in enumerate(itertools.takewhile(lambda p: p.kind.value == "list", parts)):
                size = int(part.items[6].value)
                section = fetch_items(client, uid, f"(BODY.PEEK[{number + 1}])")[f"BODY[{number + 1}]".encode()]
                assert len(section) == size
    finally:
        client.logout()


def test_seen_is_set_only_by_forms_that_set_it(dovecot: Dovecot, proxy: ProxyThread, ca) -> None:  # type: ignore[no-untyped-def]
    left, right = direct(dovecot, ca), through(proxy, ca)
    try:
        left.uid("STORE", "1:*", "-FLAGS", "(\\Seen)")
        fetch_items(right, 1, "(BODY.PEEK[])")
        fetch_items(right, 2, "(BODY.PEEK[2])")
        assert b"\\Seen" not in fetch_items(left, 1, "(FLAGS)")[b"FLAGS"]
        assert b"\\Seen" not in fetch_items(left, 2, "(FLAGS)")[b"FLAGS"]
        fetch_items(right, 1, "(BODY[])")
        fetch_items(right, INFECTED_UID, "(RFC822)")
        assert b"\\Seen" in fetch_items(left, 1, "(FLAGS)")[b"FLAGS"]
        assert b"\\Seen" in fetch_items(left, INFECTED_UID, "(FLAGS)")[b"FLAGS"]
    finally:
        left.uid("STORE", "1:*", "-FLAGS", "(\\Seen)")
        left.logout()
        right.logout()


def test_idle_keeps_working_through_the_engine(dovecot: Dovecot, proxy: ProxyThread, ca) -> None:  # type: ignore[no-untyped-def]
    client = through(proxy, ca)
    try:
        count = int(client.select("INBOX")[1][0])
        tag = client._new_tag()  # imaplib has no IDLE before Python 3.14
        client.send(tag + b" IDLE\r\n")
        assert client.readline().startswith(b"+")
        dovecot.deliver("alice", [SIMPLE.replace(b"hello", b"pushed")])
        deadline = time.monotonic() + 20
        pushed = b""
        while b"EXISTS" not in pushed and time.monotonic() < deadline:
            pushed = client.readline()
        assert pushed.strip() == b"* %d EXISTS" % (count + 1)
        client.send(b"DONE\r\n")
        while True:
            line = client.readline()
            if line.startswith(tag):
                assert b" OK " in line
                break
        new = fetch_items(client, count + 1, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert new[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: pushed\r\n\r\n"
    finally:
        client.logout()
        # leave the mailbox as the other tests expect it
        left = direct(dovecot, ca)
        left.uid("STORE", f"{count + 1}:*", "+FLAGS", "(\\Deleted)")
        left.expunge()
        left.logout()


def test_imaps_intercepted(dovecot: Dovecot, pool: ScanPool, ca) -> None:  # type: ignore[no-untyped-def]
    upstream, client_side, trusting = contexts(ca)
    route = ImapRoute("127.0.0.1", dovecot.imaps_port, implicit_tls=True, client_tls=client_side,
                      upstream_tls=upstream, upstream_hostname="localhost")
    with ProxyThread(route, lambda: ImapContext(scanner=pool, server_id="dovecot:993")) as thread:
        client = imaplib.IMAP4_SSL("127.0.0.1", thread.port, ssl_context=trusting)
        client.login("alice", PASSWORD)
        client.select("INBOX", readonly=True)
        try:
            assert fetch_items(client, 3, "(BODY.PEEK[])")[b"BODY[]"] == BIG
            assert EICAR not in fetch_items(client, INFECTED_UID, "(BODY.PEEK[])")[b"BODY[]"]
            assert b"COMPRESS" not in b" ".join(client.capabilities[i].encode() for i in range(len(client.capabilities)))
        finally:
            client.logout()


def test_a_message_too_large_to_scan_comes_through_dovecot_tagged_in_windows(dovecot: Dovecot, pool: ScanPool, ca) -> None:  # type: ignore[no-untyped-def]
    """on-scan-error = pass (the default): streamed through in windows of Dovecot's partial
    FETCHes, whole, after our header, with the RFC822.SIZE of what is delivered."""
    from mailguard.protocols.imap.limits import ImapLimits
    from mailguard.protocols.imap.oversize import UNSCANNED_TAG

    upstream, client_side, trusting = contexts(ca)
    route = ImapRoute("127.0.0.1", dovecot.imap_port, client_tls=client_side, upstream_tls=upstream,
                      upstream_hostname="localhost")
    cap = len(BIG) // 5  # the session may hold a fifth of the message: five windows or more
    limits = ImapLimits(max_response_literal=cap, max_response_size=cap * 4)
    with ProxyThread(route, lambda: ImapContext(scanner=pool, server_id="dovecot:143", limits=limits)) as thread:
        client = through(thread, ca)
        try:
            items = fetch_items(client, 3, "(RFC822.SIZE BODY.PEEK[])")
            assert items[b"BODY[]"] == UNSCANNED_TAG + BIG
            assert int(items[b"RFC822.SIZE"]) == len(UNSCANNED_TAG + BIG)
            assert fetch_items(client, 1, "(BODY.PEEK[])")[b"BODY[]"] == SIMPLE  # small ones as ever
            # Thunderbird's chunk loop over it joins to the same bytes
            chunks, offset = [], 0
            while not chunks or len(chunks[-1]) == 65536:
                chunks.append(fetch_items(client, 3, f"(BODY.PEEK[]<{offset}.65536>)")[b"BODY[]<%d>" % offset])
                offset += len(chunks[-1])
            assert b"".join(chunks) == UNSCANNED_TAG + BIG
        finally:
            client.logout()


def test_fetchmail_through_the_proxy(dovecot: Dovecot, proxy: ProxyThread, ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fetchmail = require("fetchmail")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rc = tmp_path / "fetchmailrc"
    out = tmp_path / "out"
    rc.write_text(
        f'poll localhost via 127.0.0.1 protocol IMAP port {proxy.port} user "alice" password "{PASSWORD}" '
        f'sslproto tls1.2+ sslcertck sslcommonname localhost sslcertfile "{ca_file}" keep fetchall '
        f'mda "/bin/sh -c \'cat > {out}.$$\'"\n'
    )
    rc.chmod(0o600)
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [fetchmail, "-f", str(rc), "-N", "--nosyslog", "--idfile", str(tmp_path / "ids"),
         "--pidfile", str(tmp_path / "fetchmail.pid")],
        capture_output=True, timeout=60, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode in (0, 1), result.stderr  # 1: no new mail is not an error here
    delivered = [path.read_bytes() for path in sorted(tmp_path.glob("out.*"))]
    assert len(delivered) == len(MESSAGES), result.stderr
    joined = b"".join(delivered)
    assert EICAR not in joined and b"X-MailGuard-Result: infected" in joined
    # fetchmail adds its Received: line on top; the message below it is byte for byte the original
    for message in MESSAGES[:3]:
        assert any(d.replace(b"\n", b"\r\n").endswith(message) or d.endswith(message.replace(b"\r\n", b"\n")) for d in delivered)
