"""The IMAP session against a scripted server: the traps of docs/pitfalls.md#imap and
docs/pitfalls.md#starttls-and-tls-switches."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mailguard.proxy.imap import ImapContext
from mailguard.proxy.imap_cache import RewriteCache
from mailguard.proxy.imap_listener import ImapRoute, start_imap_listener
from mailguard.scanpool.pool import ScanPool
from mailguard.scan.policy import Policy
from tests.protocols.imap.messages import EICAR, NESTED, SIMPLE
from tests.protocols.imap.mock_server import MockImapServer

pytestmark = pytest.mark.timeout(30)

INFECTED = (
    b"From: x@example.com\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
    b"--b\r\nContent-Type: application/octet-stream; name=e.com\r\n\r\n" + EICAR + b"\r\n--b--\r\n"
)


class Client:
    """A raw IMAP client: send bytes, read until a tagged line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until(self, tag: bytes) -> bytes:
        """Everything up to and including the tagged response ``tag`` (literals counted)."""
        out = b""
        while True:
            line = await self.reader.readline()
            if not line:
                return out
            out += line
            found = re.search(rb"\{(\d+)\}\r\n$", line)
            if found:
                out += await self.reader.readexactly(int(found.group(1)))
                continue
            if line.startswith(tag + b" "):
                return out

    async def command(self, tag: bytes, text: bytes) -> bytes:
        await self.send(tag + b" " + text + b"\r\n")
        return await self.until(tag)


async def run_case(
    server: MockImapServer,
    body: Callable[[Client, ImapContext], Awaitable[None]],
    *,
    cache_dir: Path | None = None,
    route_extra: dict | None = None,
    client_tls: ssl.SSLContext | None = None,
    server_id: str | None = None,
    draining: asyncio.Event | None = None,
) -> ImapContext:
    upstream = await server.start()
    pool = ScanPool(Policy(), None, kind="thread", workers=1)
    cache = RewriteCache(cache_dir) if cache_dir is not None else None
    context = ImapContext(scanner=pool, server_id=server_id or f"127.0.0.1:{server.port}", cache=cache,
                          draining=draining)
    route = ImapRoute("127.0.0.1", server.port, **(route_extra or {}))
    listener = await start_imap_listener(route, lambda: context)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = Client(reader, writer)
        await body(client, context)
        writer.close()
    finally:
        listener.close()
        upstream.close()
        pool.close()
    return context


async def login_select(client: Client) -> None:
    await client.reader.readline()
    assert b"OK" in await client.command(b"l", b"LOGIN alice pass")
    assert b"l2 OK" in await client.command(b"l2", b"SELECT INBOX")


def run(coroutine: Awaitable[object]) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


# --- capabilities (docs/pitfalls.md#capabilities-by-allow-list) ---------------------------------


def test_capabilities_are_filtered_everywhere_and_compress_is_refused_locally() -> None:
    server = MockImapServer(
        [SIMPLE],
        greeting=b"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE AUTH=SCRAM-SHA-256-PLUS AUTH=PLAIN X-UNKNOWN-EXT] hi\r\n",
        capabilities=b"IMAP4rev1 COMPRESS=DEFLATE NOTIFY BINARY UTF8=ACCEPT QRESYNC AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256",
        login_code=b"[CAPABILITY IMAP4rev1 LITERAL+ COMPRESS=DEFLATE] ",
    )
    seen = []

    async def body(client: Client, _: ImapContext) -> None:
        seen.append(await client.reader.readline())
        seen.append(await client.command(b"a", b"CAPABILITY"))
        seen.append(await client.command(b"b", b"LOGIN alice pass"))
        seen.append(await client.command(b"c", b"COMPRESS DEFLATE"))
        seen.append(await client.command(b"d", b"ENABLE QRESYNC UTF8=ACCEPT"))
        seen.append(await client.command(b"e", b"NOOP"))

    run(run_case(server, body))
    everything = b"".join(seen)
    for stripped in (b"COMPRESS", b"-PLUS", b"X-UNKNOWN", b"NOTIFY", b"UTF8=ACCEPT", b"QRESYNC"):
        assert stripped not in everything.replace(b"COMPRESS is not available", b"")
    assert seen[0] == b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"
    assert b"* CAPABILITY IMAP4rev1 BINARY AUTH=SCRAM-SHA-256\r\n" in seen[1]
    assert seen[2] == b"b OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in\r\n"
    assert seen[3].startswith(b"c NO ")
    assert seen[4] == b"* ENABLED\r\nd OK ENABLE completed\r\n"
    assert seen[5].startswith(b"e OK")  # still plaintext IMAP after the refused COMPRESS
    assert not any(b"COMPRESS" in raw or b"ENABLE" in raw for raw in server.received)


# --- FETCH: unsolicited responses, pipelining, several literals (docs/pitfalls.md#imap) ---------


def test_unsolicited_responses_keep_their_place_around_an_intercepted_fetch() -> None:
    server = MockImapServer(
        [SIMPLE, NESTED, SIMPLE],
        inject_first={"FETCH": b"* 3 FETCH (FLAGS (\\Seen))\r\n"},
        # between our FETCH's literal and its tagged OK, and in the client's own
        inject={"FETCH": b"* 4 EXISTS\r\n* 2 EXPUNGE\r\n", "UID FETCH": b"* 3 FETCH (FLAGS ())\r\n* 5 EXISTS\r\n"},
    )
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"FETCH 1 (BODY.PEEK[] FLAGS)"))

    run(run_case(server, body))
    response = out[0]
    fetch_at = response.index(b"* 1 FETCH (BODY[] {%d}\r\n" % len(SIMPLE) + SIMPLE + b" FLAGS ())")
    assert response.index(b"* 3 FETCH (FLAGS (\\Seen))") < fetch_at < response.index(b"* 4 EXISTS")
    assert response.index(b"* 4 EXISTS") < response.index(b"* 2 EXPUNGE") < response.index(b"* 5 EXISTS")
    assert response.index(b"* 3 FETCH (FLAGS ())") < response.index(b"* 5 EXISTS") < response.index(b"a OK")
    assert b"UID" not in response.split(b"{")[0]  # UID was ours to ask for, not the client's


def test_pipelined_fetches_each_answer_before_their_tag() -> None:
    server = MockImapServer([SIMPLE, NESTED])
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        await client.send(b"a FETCH 1 BODY.PEEK[]\r\nb UID FETCH 2 (BODY.PEEK[1])\r\nc NOOP\r\n")
        out.append(await client.until(b"c"))

    run(run_case(server, body))
    stream = out[0]
    assert stream.index(b"* 1 FETCH (BODY[] {") < stream.index(b"a OK") < stream.index(b"* 2 FETCH (UID 2 BODY[1] {10}\r\nfirst part)")
    assert stream.index(b"* 2 FETCH") < stream.index(b"b OK") < stream.index(b"c OK")


@pytest.mark.parametrize("reverse", [False, True], ids=["uid-first", "body-first"])
def test_body_items_are_found_in_either_order(reverse: bool) -> None:
    server = MockImapServer([SIMPLE, INFECTED], reverse_items=reverse)
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"FETCH 1:2 (BODY.PEEK[] UID)"))
        out.append(await client.command(b"b", b"UID FETCH 2 (RFC822.SIZE BODY.PEEK[TEXT])"))

    run(run_case(server, body))
    assert b"* 1 FETCH (BODY[] {%d}\r\n" % len(SIMPLE) + SIMPLE + b" UID 1)" in out[0]
    assert EICAR not in out[0] + out[1] and b"* 2 FETCH (BODY[] {" in out[0]


def test_unsolicited_message_text_is_never_relayed() -> None:
    # A server (or a man in the middle) pushing message text nobody asked for, in two literals.
    server = MockImapServer(
        [SIMPLE],
        inject={"NOOP": b"* 1 FETCH (UID 1 BODY[HEADER] {4}\r\nab\r\n BODY[TEXT] {%d}\r\n%s)\r\n" % (len(EICAR), EICAR)},
    )
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"n", b"NOOP"))

    run(run_case(server, body))
    assert EICAR not in out[0] and out[0].endswith(b"n OK NOOP completed\r\n")


# --- scan before release, sizes, \Seen (docs/pitfalls.md#imap) ----------------------------------


def test_chunked_fetch_of_an_infected_message_never_leaks_and_scans_once() -> None:
    server = MockImapServer([INFECTED])
    chunks: list[bytes] = []
    sizes: list[int] = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        offset = 0
        while True:  # Thunderbird's loop: 64-byte windows here, so many of them
            answer = await client.command(b"t%d" % offset, b"UID FETCH 1 (UID RFC822.SIZE BODY.PEEK[]<%d.64>)" % offset)
            sizes.append(int(re.search(rb"RFC822.SIZE (\d+)", answer).group(1)))
            literal = re.search(rb"BODY\[\]<%d> \{(\d+)\}\r\n" % offset, answer)
            assert literal is not None, answer  # never an answer without the item
            n = int(literal.group(1))
            chunks.append(answer[literal.end() : literal.end() + n])
            if n < 64:
                break
            offset += 64
        assert context.stats["scanned"] == 1

    run(run_case(server, body))
    served = b"".join(chunks)
    assert EICAR not in served and b"EICAR" not in served
    assert set(sizes) == {len(served)}
    assert b"X-MailGuard-Result: infected" in served
    assert not server.seen


def test_non_peek_forms_set_seen_and_peek_forms_do_not() -> None:
    server = MockImapServer([SIMPLE, SIMPLE, SIMPLE])
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"FETCH 1 (BODY.PEEK[TEXT] RFC822.HEADER)"))
        out.append(await client.command(b"b", b"FETCH 2 (RFC822)"))
        out.append(await client.command(b"c", b"UID FETCH 3 (BODY[1])"))

    run(run_case(server, body))
    assert server.seen == {2, 3}
    assert b"* 2 FETCH (UID 2 FLAGS (\\Seen))" in out[1]
    assert any(raw.startswith(b"mg") and b"UID STORE 2 +FLAGS (\\Seen)" in raw for raw in server.received)
    assert all(b"BODY[]" not in raw or b"BODY.PEEK[]" in raw for raw in server.received)


def test_sizes_structure_and_envelope_describe_the_served_message() -> None:
    server = MockImapServer([INFECTED])
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(
            b"a", b"UID FETCH 1 (UID RFC822.SIZE BODYSTRUCTURE ENVELOPE BODY.PEEK[HEADER.FIELDS (Subject)])"))
        out.append(await client.command(b"b", b"UID FETCH 1 (BODY.PEEK[] BODY.PEEK[2] BODY.PEEK[2.MIME])"))

    run(run_case(server, body))
    first, second = out
    whole = re.search(rb"BODY\[\] \{(\d+)\}\r\n", second)
    served = second[whole.end() : whole.end() + int(whole.group(1))]
    assert int(re.search(rb"RFC822.SIZE (\d+)", first).group(1)) == len(served)
    subject = re.search(rb"\r\nSubject: ([^\r\n]*)", served).group(1)
    assert subject.startswith(b"[detection ")
    # computed from the served message, not the server's ("original subject", no From)
    assert b'ENVELOPE (NIL "' + subject + b'" ((NIL NIL "x" "example.com"))' in first
    assert b"Subject: " + subject + b"\r\n\r\n" in first
    part2 = re.search(rb"BODY\[2\] \{(\d+)\}\r\n", second)
    part2_bytes = second[part2.end() : part2.end() + int(part2.group(1))]
    assert part2_bytes in served and EICAR not in part2_bytes
    # BODYSTRUCTURE's size of part 2 is the size of BODY[2] as served
    assert b'"base64" %d' % len(part2_bytes) in first or b'"7bit" %d' % len(part2_bytes) in first


def test_the_cache_serves_the_same_bytes_across_sessions_and_follows_uidvalidity(tmp_path: Path) -> None:
    served: list[bytes] = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        served.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))

    # Each run is a new proxy (a restart) in front of a new server process on a new port;
    # the route's upstream name stays the same, and so does the cache key.
    first = run(run_case(MockImapServer([INFECTED]), body, cache_dir=tmp_path, server_id="mail:143"))
    second = run(run_case(MockImapServer([INFECTED]), body, cache_dir=tmp_path, server_id="mail:143"))
    third = run(run_case(MockImapServer([INFECTED], uidvalidity=43), body, cache_dir=tmp_path, server_id="mail:143"))
    assert served[0] == served[1] == served[2]
    assert first.stats.get("scanned") == 1 and "scanned" not in second.stats and third.stats["scanned"] == 1
    assert second.stats["cache_hits"] == 1
    for path in tmp_path.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0


def test_a_cache_that_cannot_be_written_still_serves_the_scanned_message(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RewriteCache, "put", full)
    answers: list[bytes] = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        answers.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))

    context = run(run_case(MockImapServer([INFECTED]), body, cache_dir=tmp_path))
    assert b"a OK" in answers[0] and EICAR not in answers[0]
    assert b"X-MailGuard-Result: infected" in answers[0]
    assert context.stats.get("scanned") == 1


# --- IDLE (docs/pitfalls.md#idle-and-continuation-data) ---------------------------------------


def test_idle_done_is_continuation_data_and_pushed_responses_arrive() -> None:
    server = MockImapServer([SIMPLE], inject={"IDLE": b"* 2 EXISTS\r\n* 1 FETCH (FLAGS ())\r\n"})
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        await client.send(b"i IDLE\r\n")
        out.append(await client.reader.readline())
        out.append(await client.reader.readline())
        out.append(await client.reader.readline())
        await client.send(b"DONE\r\n")
        out.append(await client.until(b"i"))
        out.append(await client.command(b"n", b"NOOP"))

    run(run_case(server, body))
    assert out[:3] == [b"+ idling\r\n", b"* 2 EXISTS\r\n", b"* 1 FETCH (FLAGS ())\r\n"]
    assert out[3] == b"i OK IDLE done\r\n" and out[4].startswith(b"n OK")
    assert b"DONE\r\n" in server.received


# --- caps on what the server sends (docs/pitfalls.md#imap-literal-sizes) -----------------------


def test_an_absurd_literal_from_the_server_ends_the_session_with_bye() -> None:
    server = MockImapServer([SIMPLE], inject={"NOOP": b"* 1 FETCH (BODY[] {9223372036854775807}\r\nabc"})
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"n", b"NOOP"))

    run(run_case(server, body))
    assert out[0].startswith(b"* BYE ") and b"cap" in out[0]


# --- STARTTLS and PREAUTH (docs/pitfalls.md#starttls-and-tls-switches) --------------------------


@pytest.fixture(scope="module")
def tls_pair():  # type: ignore[no-untyped-def]
    """(server context for the mock upstream, client context trusting it, server context for the proxy)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    upstream_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(upstream_server)
    upstream_client = ssl.create_default_context()
    ca.configure_trust(upstream_client)
    proxy_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(proxy_server)
    proxy_client = ssl.create_default_context()
    ca.configure_trust(proxy_client)
    return upstream_server, upstream_client, proxy_server, proxy_client


STARTTLS_GREETING = b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mock ready\r\n"


def starttls_route(tls_pair) -> dict:  # type: ignore[no-untyped-def]
    _, upstream_client, proxy_server, _ = tls_pair
    return {"client_tls": proxy_server, "upstream_tls": upstream_client, "upstream_hostname": "localhost"}


def test_starttls_on_both_legs_then_scanned_fetch(tls_pair) -> None:  # type: ignore[no-untyped-def]
    server = MockImapServer([INFECTED], greeting=STARTTLS_GREETING, tls=tls_pair[0],
                            capabilities=b"IMAP4rev1 AUTH=PLAIN IDLE")
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        out.append(await client.reader.readline())
        out.append(await client.command(b"a", b"CAPABILITY"))
        out.append(await client.command(b"b", b"LOGIN alice pass"))  # refused before TLS
        out.append(await client.command(b"c", b"STARTTLS"))
        await client.writer.start_tls(tls_pair[3], server_hostname="127.0.0.1")
        out.append(await client.command(b"d", b"CAPABILITY"))
        out.append(await client.command(b"e", b"LOGIN alice pass"))
        out.append(await client.command(b"f", b"SELECT INBOX"))
        out.append(await client.command(b"g", b"FETCH 1 BODY.PEEK[]"))

    run(run_case(server, body, route_extra=starttls_route(tls_pair)))
    assert out[0] == b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] IMAP proxy ready\r\n"
    assert out[1].startswith(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n")
    assert out[2].startswith(b"b NO [PRIVACYREQUIRED]")
    assert out[3].startswith(b"c OK")
    assert out[4].startswith(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE\r\n")
    assert out[5].startswith(b"e OK") and EICAR not in out[7] and b"g OK" in out[7]
    # the upstream leg did STARTTLS before any credential crossed it
    assert server.received[0].endswith(b"STARTTLS\r\n")
    assert server.received.index(b"e LOGIN alice pass\r\n") > 0
    assert b"b LOGIN alice pass\r\n" not in server.received


def test_commands_injected_behind_the_clients_starttls_are_refused(tls_pair) -> None:  # type: ignore[no-untyped-def]
    server = MockImapServer([SIMPLE], greeting=STARTTLS_GREETING, tls=tls_pair[0])
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await client.reader.readline()
        await client.send(b"a STARTTLS\r\nb LOGIN alice pass\r\n")
        out.append(await client.reader.read(1000))

    run(run_case(server, body, route_extra=starttls_route(tls_pair)))
    assert out[0].startswith(b"* BYE ") and b"a OK" not in out[0]
    assert not any(b"LOGIN" in raw for raw in server.received)


@pytest.mark.parametrize(
    "answer",
    [
        b"OK go\r\nb OK fake\r\n",
        b"OK go\r\n* CAPABILITY IMAP4rev1 AUTH=PLAI",
        b"NO not today\r\n",
    ],
)
def test_upstream_starttls_answers_that_must_end_the_session(tls_pair, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    server = MockImapServer([SIMPLE], greeting=STARTTLS_GREETING, tls=None, starttls_answer=answer)
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        out.append(await client.reader.read(1000))
        out.append(await client.reader.read(1000))

    run(run_case(server, body, route_extra=starttls_route(tls_pair)))
    assert out[0].startswith(b"* BYE ") and out[1] == b""
    assert len(server.received) == 1  # STARTTLS, and nothing after it


def test_preauth_on_a_cleartext_upstream_is_refused(tls_pair) -> None:  # type: ignore[no-untyped-def]
    server = MockImapServer([SIMPLE], greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] welcome\r\n")
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        out.append(await client.reader.read(1000))
        out.append(await client.reader.read(1000))

    run(run_case(server, body, route_extra=starttls_route(tls_pair)))
    assert out[0].startswith(b"* BYE PREAUTH") and out[1] == b""
    assert server.received == []


def test_without_interception_starttls_becomes_a_byte_relay() -> None:
    server = MockImapServer([SIMPLE], greeting=STARTTLS_GREETING, starttls_answer=b"OK relay me\r\n")
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        out.append(await client.reader.readline())
        out.append(await client.command(b"a", b"STARTTLS"))

    run(run_case(server, body))
    assert b"STARTTLS" in out[0]  # not stripped: that would be a downgrade
    assert out[1] == b"a OK relay me\r\n"


def test_a_message_too_large_to_scan_is_replaced_by_a_notice_not_dropped() -> None:
    from mailguard.protocols.imap.limits import ImapLimits

    big = SIMPLE + b"x" * 5000 + b"\r\n"
    server = MockImapServer([SIMPLE, big])
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        context.limits = ImapLimits(max_response_literal=4000)
        context.on_oversize = "block"  # response.on-scan-error = block
        await login_select(client)
        out.append(await client.command(b"a", b"FETCH 1:2 (RFC822.SIZE BODY.PEEK[])"))

    run(run_case(server, body))
    answer = out[0]
    assert b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n" % (len(SIMPLE), len(SIMPLE)) + SIMPLE in answer
    notice = re.search(rb"\* 2 FETCH \(RFC822.SIZE (\d+) BODY\[\] \{(\d+)\}\r\n", answer)
    assert notice is not None and notice.group(1) == notice.group(2)
    assert b"too large to scan" in answer and b"x" * 100 not in answer
    # The claimed size decides nothing: the octets do, and no more of them than we scan plus one.
    assert [raw for raw in server.received if b"UID FETCH 2 " in raw] == [b"mg2 UID FETCH 2 (UID BODY.PEEK[]<0.4000>)\r\n"]


def test_a_stopping_engine_says_bye() -> None:
    server = MockImapServer([SIMPLE])
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        assert context.draining is not None
        context.draining.set()
        out.append(await client.reader.read(1000))
        out.append(await client.reader.read(1000))

    async def case() -> None:
        await run_case(server, body, draining=asyncio.Event())

    run(case())
    assert out == [b"* BYE mailguard is stopping, please reconnect\r\n", b""]


def test_a_single_uid_fetch_too_large_to_scan_gets_the_notice_too() -> None:
    from mailguard.protocols.imap.limits import ImapLimits

    big = SIMPLE + b"x" * 5000 + b"\r\n"
    server = MockImapServer([big])
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        context.limits = ImapLimits(max_response_literal=4000, max_response_size=100_000)
        context.on_oversize = "block"
        await login_select(client)
        out.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))

    run(run_case(server, body))
    assert b"too large to scan" in out[0] and b"x" * 100 not in out[0] and b"a OK" in out[0]


# --- too large to scan, on-scan-error = pass: delivered, tagged unscanned (oversize.py) ----------

TAG = b'X-MailGuard-Result: unscanned; reason="limit"\r\n'
BIG = SIMPLE + b"x" * 9000 + b"\r\n"


def _literal(answer: bytes, item: bytes) -> bytes:
    found = re.search(re.escape(item) + rb" \{(\d+)\}\r\n", answer)
    assert found is not None, answer[:300]
    return answer[found.end() : found.end() + int(found.group(1))]


def _answer_holding_4000(server: MockImapServer, command: bytes) -> bytes:
    """The answer to ``command`` through a session that holds literals of 4,000 octets at most."""
    from mailguard.protocols.imap.limits import ImapLimits

    out = []

    async def body(client: Client, context: ImapContext) -> None:
        context.limits = ImapLimits(max_response_literal=4000, max_response_size=100_000)
        await login_select(client)
        out.append(await client.command(b"a", command))

    run(run_case(server, body))
    return out[0]


@pytest.mark.parametrize("command", [b"FETCH 1:2 (RFC822.SIZE BODY.PEEK[])", b"UID FETCH 2 (RFC822.SIZE BODY.PEEK[])"],
                         ids=["two-trips", "one-trip"])
def test_a_message_too_large_to_scan_is_delivered_tagged_unscanned_when_passing(command: bytes) -> None:
    server = MockImapServer([SIMPLE, BIG])
    answer = _answer_holding_4000(server, command)
    assert _literal(answer.split(b"* 2 FETCH")[1], b"BODY[]") == TAG + BIG  # whole, after our header
    assert re.search(rb"\* 2 FETCH \([^)]*RFC822.SIZE %d" % len(TAG + BIG), answer)  # the size it delivers
    assert answer.endswith(b"a OK FETCH completed\r\n") or answer.endswith(b"a OK UID FETCH completed\r\n")
    # fetched in windows the session can hold, never whole
    windows = [raw for raw in server.received if b"BODY.PEEK[]<" in raw and b"UID FETCH 2 " in raw]
    assert len(windows) >= 3 and not any(raw.endswith(b"(BODY.PEEK[])\r\n") and b"UID FETCH 2 " in raw
                                         for raw in server.received)


def test_a_chunk_loop_over_a_message_too_large_to_scan_joins_to_the_tagged_message() -> None:
    """Thunderbird and iOS fetch large messages as partials of BODY[]: octets of what we deliver."""
    from mailguard.protocols.imap.limits import ImapLimits

    server = MockImapServer([BIG])
    chunks: list[bytes] = []

    async def body(client: Client, context: ImapContext) -> None:
        context.limits = ImapLimits(max_response_literal=4000, max_response_size=100_000)
        await login_select(client)
        offset = 0
        while True:
            answer = await client.command(b"c%d" % offset, b"UID FETCH 1 (UID BODY.PEEK[]<%d.3000>)" % offset)
            chunk = _literal(answer, b"BODY[]<%d>" % offset)
            chunks.append(chunk)
            if len(chunk) < 3000:
                return
            offset += len(chunk)

    run(run_case(server, body))
    assert b"".join(chunks) == TAG + BIG and chunks[0].startswith(TAG)


def test_a_section_of_a_message_too_large_to_scan_still_gets_the_notice() -> None:
    answer = _answer_holding_4000(MockImapServer([BIG]), b"FETCH 1 (BODY.PEEK[TEXT])")
    assert b"x" * 100 not in answer and b"a OK" in answer


def test_rfc822_of_a_message_too_large_to_scan_sets_seen_as_it_would() -> None:
    server = MockImapServer([BIG])
    assert _literal(_answer_holding_4000(server, b"FETCH 1 (RFC822)"), b"RFC822") == TAG + BIG
    assert server.seen == {1}


def test_a_server_sending_less_than_it_announced_ends_the_session_never_a_short_message() -> None:
    from mailguard.protocols.imap.limits import ImapLimits

    class Shrinking(MockImapServer):
        def _fetch(self, command):  # type: ignore[no-untyped-def]
            answer = super()._fetch(command)
            if b"BODY[]<" in answer and b"BODY[]<0>" not in answer:
                return b""  # the second window never comes
            return answer

    server = Shrinking([BIG])
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        context.limits = ImapLimits(max_response_literal=4000, max_response_size=100_000)
        await login_select(client)
        await client.send(b"a FETCH 1 (BODY.PEEK[])\r\n")
        out.append(await client.reader.read())  # until the proxy closes

    run(run_case(server, body))
    announced = int(re.search(rb"BODY\[\] \{(\d+)\}\r\n", out[0]).group(1))
    assert announced == len(TAG + BIG)
    assert b"a OK" not in out[0]  # the literal is never completed, the command never succeeds


def test_modifiers_and_section_specs_travel_as_written() -> None:
    server = MockImapServer([SIMPLE])
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(
            b"a", b"UID FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (date subject From x-priority)]) (CHANGEDSINCE 5)"))
        out.append(await client.command(b"b", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)"))

    run(run_case(server, body))
    # Apple Mail matches answers by the section string: echoed byte for byte
    # (docs/pitfalls.md#section-specs-echoed-verbatim)
    assert b"BODY[HEADER.FIELDS (date subject From x-priority)] {" in out[0]
    # the fields in the message's order, not the request's
    assert b"From: Alice <alice@example.com>\r\nSubject: hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n" in out[0]
    meta = next(raw for raw in server.received if raw.startswith(b"a UID FETCH"))
    assert meta.endswith(b") (CHANGEDSINCE 5)\r\n") and b"HEADER.FIELDS" not in meta
    assert b"b UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)\r\n" in server.received  # nothing to scan: relayed as is


def test_authenticate_plain_names_the_user_for_the_cache(tmp_path: Path) -> None:
    import base64

    contexts = []

    async def body(client: Client, context: ImapContext) -> None:
        await client.reader.readline()
        await client.send(b"l AUTHENTICATE PLAIN\r\n")
        assert (await client.reader.readline()).startswith(b"+")
        await client.send(base64.b64encode(b"\0alice\0pass") + b"\r\n")
        assert (await client.until(b"l")).startswith(b"l OK")
        assert b"OK" in await client.command(b"s", b"SELECT INBOX")
        await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])")
        contexts.append(context)

    for _ in range(2):
        run(run_case(MockImapServer([INFECTED]), body, cache_dir=tmp_path, server_id="mail:143"))
    assert contexts[0].stats.get("scanned") == 1 and contexts[1].stats.get("cache_hits") == 1


def test_a_whole_mailbox_fetch_mixing_cached_and_new_messages_comes_out_in_order(tmp_path: Path) -> None:
    messages = [SIMPLE.replace(b"hello", b"m%d" % n) if n % 3 else INFECTED for n in range(1, 8)]
    server = MockImapServer(messages)
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        context.batch_bytes = 1  # one message per upstream batch
        await login_select(client)
        await client.command(b"w", b"UID FETCH 2 (BODY.PEEK[])")
        await client.command(b"x", b"UID FETCH 5 (BODY.PEEK[])")
        out.append(await client.command(b"a", b"FETCH 1:* (UID BODY.PEEK[])"))
        assert context.stats["scanned"] == 7

    run(run_case(server, body, cache_dir=tmp_path))
    answers = re.findall(rb"\* (\d+) FETCH \(UID (\d+) BODY\[\] \{\d+\}\r\n", out[0])
    assert answers == [(b"%d" % n, b"%d" % n) for n in range(1, 8)]
    assert EICAR not in out[0]
    for n in (1, 2, 4, 5, 7):
        assert b"Subject: m%d\r\n" % n in out[0]


# --- no round trip for what we hold; reading ahead of a client that reads in order (issue 7) ----


def _fetches(server: MockImapServer) -> list[bytes]:
    return [raw for raw in server.received if b"FETCH" in raw.upper()]


def test_a_message_served_before_is_answered_without_asking_the_server() -> None:
    server = MockImapServer([SIMPLE, INFECTED])
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"UID FETCH 2 (UID RFC822.SIZE BODY.PEEK[])"))
        asked = len(_fetches(server))
        out.append(await client.command(b"b", b"UID FETCH 2 (UID RFC822.SIZE BODY.PEEK[]<0.64> BODY.PEEK[1])"))
        out.append(await client.command(b"c", b"FETCH 2 (RFC822.HEADER)"))
        assert len(_fetches(server)) == asked  # neither needed the server
        assert context.stats["local_answers"] == 2 and context.stats["scanned"] == 1
        # FLAGS, or a form that sets \Seen, still goes to the server
        out.append(await client.command(b"d", b"UID FETCH 2 (FLAGS BODY.PEEK[])"))
        assert len(_fetches(server)) == asked + 1

    run(run_case(server, body))
    first, second, third, fourth = out
    whole = re.search(rb"BODY\[\] \{(\d+)\}\r\n", first)
    served = first[whole.end() : whole.end() + int(whole.group(1))]
    assert EICAR not in b"".join(out) and b"X-MailGuard-Result: infected" in served
    assert second.startswith(b"* 2 FETCH (UID 2 RFC822.SIZE %d BODY[]<0> {64}\r\n" % len(served) + served[:64] + b" BODY[1] {")
    assert second.endswith(b")\r\nb OK UID FETCH completed\r\n")
    header_end = served.index(b"\r\n\r\n") + 4
    assert third == b"* 2 FETCH (RFC822.HEADER {%d}\r\n" % header_end + served[:header_end] + b")\r\nc OK FETCH completed\r\n"
    assert served in fourth and b"FLAGS (" in fourth
    assert not server.seen


def test_a_client_reading_in_order_is_read_ahead_with_peek_and_gets_the_same_bytes() -> None:
    messages = [SIMPLE.replace(b"hello", b"m%d" % n) if n != 4 else INFECTED for n in range(1, 10)]
    server = MockImapServer(messages)
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        for uid in range(1, 10):
            out.append(await client.command(b"f%d" % uid, b"UID FETCH %d (UID RFC822.SIZE BODY.PEEK[])" % uid))
        assert context.stats["local_answers"] >= 5 and context.stats["scanned"] == 9
        out.append(await client.command(b"n", b"NOOP"))

    run(run_case(server, body))
    for uid, answer in enumerate(out[:9], start=1):
        if uid == 4:
            assert EICAR not in answer and b"X-MailGuard-Result: infected" in answer
            continue
        message = messages[uid - 1]
        assert answer == (b"* %d FETCH (UID %d RFC822.SIZE %d BODY[] {%d}\r\n" % (uid, uid, len(message), len(message))
                          + message + b")\r\nf%d OK UID FETCH completed\r\n" % uid) or answer.startswith(
                              b"* %d FETCH (UID %d RFC822.SIZE %d BODY[] {%d}\r\n" % (uid, uid, len(message), len(message))
                              + message + b")\r\nf%d OK" % uid)
    assert out[9].endswith(b"n OK NOOP completed\r\n")
    ours = [raw for raw in _fetches(server) if raw.startswith(b"mg")]
    assert ours and all(b"BODY[" not in raw.upper().replace(b"BODY.PEEK[", b"") for raw in ours)
    assert not server.seen


def test_an_expunge_renumbers_what_is_answered_from_memory() -> None:
    server = MockImapServer([SIMPLE, NESTED], inject={"NOOP": b"* 1 EXPUNGE\r\n"})
    out = []

    async def body(client: Client, context: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"UID FETCH 1:2 (UID BODY.PEEK[])"))
        out.append(await client.command(b"n", b"NOOP"))
        asked = len(_fetches(server))
        out.append(await client.command(b"b", b"FETCH 1 (BODY.PEEK[])"))  # now UID 2
        assert len(_fetches(server)) == asked

    run(run_case(server, body))
    second = re.search(rb"\* 2 FETCH \(UID 2 BODY\[\] \{(\d+)\}\r\n", out[0])
    served = out[0][second.end() : second.end() + int(second.group(1))]
    assert out[1].startswith(b"* 1 EXPUNGE\r\n")
    assert out[2] == b"* 1 FETCH (BODY[] {%d}\r\n" % len(served) + served + b")\r\nb OK FETCH completed\r\n"


def test_plaintext_injected_while_our_upstream_starttls_is_answered_is_not_read_as_commands(tls_pair) -> None:  # type: ignore[no-untyped-def]
    """Transparent mode: the server's STARTTLS waits for the client's, and its answer takes a
    while. Plaintext injected in that wait (CVE-2011-0411 class) must stay where the TLS layer
    sees it and refuses it, not be read as commands once the client's TLS is up."""
    from mailguard.proxy.imap import ClientNamedTls

    class SlowStarttls(MockImapServer):
        async def _command(self, command, writer, machine):  # type: ignore[no-untyped-def]
            if command.name == "STARTTLS":
                await asyncio.sleep(0.5)
            return await super()._command(command, writer, machine)

    upstream_server, upstream_client, proxy_server, _ = tls_pair
    server = SlowStarttls([SIMPLE], greeting=STARTTLS_GREETING, tls=upstream_server)
    out: list[bytes] = []

    async def upgrade(conn, name: str) -> None:  # type: ignore[no-untyped-def]
        await conn.start_tls(upstream_client, server_side=False, server_hostname="localhost")

    async def body(client: Client, context: ImapContext) -> None:
        context.client_named_tls = ClientNamedTls(upgrade, lambda name, cert: proxy_server,
                                                  lambda name: False, 5.0)
        await client.reader.readline()
        await client.send(b"a STARTTLS\r\n")
        await asyncio.sleep(0.2)  # our STARTTLS is upstream, unanswered
        await client.send(b"b NOOP\r\n")  # injected in plaintext
        out.append(await client.reader.readline())
        if out[0].startswith(b"a OK"):
            sni_only = ssl.create_default_context()
            sni_only.check_hostname, sni_only.verify_mode = False, ssl.CERT_NONE
            try:
                await client.writer.start_tls(sni_only, server_hostname="localhost")
                out.append(await asyncio.wait_for(client.reader.read(1000), 3))
            except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass

    run(run_case(server, body, route_extra=starttls_route(tls_pair)))
    assert not any(b"NOOP" in raw for raw in server.received)
    assert not any(b"b OK" in answer for answer in out)


# --- default deny: the allow-list of commands per state (allowlist.py) ---------------------------


def test_pipelined_login_select_fetch_pass_and_commands_out_of_state_or_unknown_never_reach_the_server() -> None:
    server = MockImapServer([SIMPLE])
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await client.reader.readline()
        out.append(await client.command(b"a", b"FETCH 1 (FLAGS)"))  # nothing selected, not even logged in
        await client.send(b"b LOGIN alice pass\r\nc SELECT INBOX\r\nd FETCH 1 (UID FLAGS)\r\n")
        out.append(await client.until(b"d"))
        out.append(await client.command(b"e", b"XYZZY"))
        out.append(await client.command(b"f", b"LOGIN again please"))

    run(run_case(server, body))
    assert out[0] == b"a BAD FETCH is not valid in this state\r\n"
    assert b"b OK" in out[1] and b"c OK" in out[1] and b"* 1 FETCH (UID 1 FLAGS ())\r\nd OK" in out[1]
    assert out[2] == b"e BAD Command not available through this proxy\r\n"
    assert out[3] == b"f BAD LOGIN is not valid in this state\r\n"
    assert not any(raw.startswith((b"a ", b"e ", b"f ")) for raw in server.received)


def test_a_command_sent_instead_of_done_during_idle_never_reaches_the_server() -> None:
    server = MockImapServer([SIMPLE])
    out = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        await client.send(b"i IDLE\r\n")
        out.append(await client.reader.readline())
        await client.send(b"x URLFETCH imap://alice@127.0.0.1/INBOX/;uid=1\r\n")
        out.append(await client.reader.read())  # until the proxy closes

    run(run_case(server, body))
    assert out[0].startswith(b"+ ")
    assert out[1].startswith(b"* BYE") and b"DONE" in out[1]
    assert not any(b"URLFETCH" in raw for raw in server.received)


def test_the_context_hands_every_option_to_the_machine() -> None:
    options = ImapContext(scanner=None, server_id="mail:143", read_ahead=False).options()
    assert options.read_ahead is False and options.server_id == "mail:143"
