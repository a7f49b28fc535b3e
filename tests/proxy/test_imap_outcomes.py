"""What an IMAP FETCH gets for the outcomes a scan may have beyond clean and infected: the
original not kept in quarantine, a temporary failure, protection switched off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailguard.proxy.imap import ImapContext
from mailguard.proxy.imap_cache import RewriteCache
from mailguard.proxy.imap_listener import ImapRoute, start_imap_listener
from mailguard.scanpool.job import ScanOutcome
from tests.protocols.imap.mock_server import MockImapServer
from tests.proxy.test_imap import INFECTED, Client, login_select

pytestmark = pytest.mark.timeout(30)

CLEAN = b"From: a@example.com\r\nSubject: hello\r\n\r\nplain text\r\n"


class FakeScanner:
    """Answers every scan with ``outcome`` and counts the calls."""

    def __init__(self, outcome: ScanOutcome) -> None:
        self.outcome = outcome
        self.calls = 0

    async def scan(self, raw: bytes, source: str) -> ScanOutcome:
        self.calls += 1
        return self.outcome


async def run_with(server: MockImapServer, scanner: Any, body: Callable[[Client], Awaitable[None]], *,
                   cache_dir: Path | None = None, cache: RewriteCache | None = None, **extra: Any) -> ImapContext:
    upstream = await server.start()
    if cache is None and cache_dir is not None:
        cache = RewriteCache(cache_dir)
    context = ImapContext(scanner=scanner, server_id="mail:143", cache=cache, **extra)
    listener = await start_imap_listener(ImapRoute("127.0.0.1", server.port), lambda: context)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
        await body(Client(reader, writer))
        writer.close()
    finally:
        listener.close()
        upstream.close()
    return context


def test_a_rewrite_whose_original_could_not_be_quarantined_is_refused_and_not_cached(tmp_path: Path) -> None:
    rewritten = b"X-MailGuard-Result: infected\r\nSubject: invoice\r\n\r\ncleaned\r\n"
    failed = ScanOutcome("infected", ("Eicar",), (), rewritten, error="quarantine: OSError: disk full",
                         quarantine_failed=True)
    answers: list[bytes] = []

    async def body(client: Client) -> None:
        await login_select(client)
        answers.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))
        answers.append(await client.command(b"b", b"FETCH 1 (BODY.PEEK[])"))

    scanner = FakeScanner(failed)
    asyncio.run(run_with(MockImapServer([INFECTED]), scanner, body, cache_dir=tmp_path))
    for answer, tag in zip(answers, (b"a", b"b")):
        assert answer.endswith(tag + b" NO [UNAVAILABLE] mailguard: could not keep the original in quarantine,"
                               b" try later\r\n"), answer
        assert b"cleaned" not in answer and b"EICAR" not in answer
    assert scanner.calls == 2  # not held in the session's memory either
    ok = FakeScanner(ScanOutcome("clean", (), (), None))
    asyncio.run(run_with(MockImapServer([INFECTED]), ok, body, cache_dir=tmp_path))
    assert ok.calls == 1  # nothing was cached from the failed session


@pytest.mark.parametrize("reason", ["timeout", "engine-error"])
def test_a_temporary_scan_failure_is_not_cached(tmp_path: Path, reason: str) -> None:
    tagged = b'X-MailGuard-Result: unscanned; reason="%s"\r\n' % reason.encode() + CLEAN
    answers: list[bytes] = []

    async def body(client: Client) -> None:
        await login_select(client)
        answers.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))

    first = FakeScanner(ScanOutcome("unscanned", (), (reason,), tagged))
    asyncio.run(run_with(MockImapServer([CLEAN]), first, body, cache_dir=tmp_path))
    assert b"a OK" in answers[0] and b"unscanned" in answers[0]
    second = FakeScanner(ScanOutcome("clean", (), (), None))
    asyncio.run(run_with(MockImapServer([CLEAN]), second, body, cache_dir=tmp_path))
    assert second.calls == 1 and b"unscanned" not in answers[1]
    # a lasting outcome is cached: a third session does not scan
    third = FakeScanner(ScanOutcome("clean", (), (), None))
    asyncio.run(run_with(MockImapServer([CLEAN]), third, body, cache_dir=tmp_path))
    assert third.calls == 0


def _after_an_update(tmp_path: Path, outcome: ScanOutcome, on_scan_error: str) -> tuple[list[bytes], int, int]:
    """CLEAN served clean under generation g1; the signatures change to g2, and the rescan of
    two FETCHes in one session comes out as ``outcome``; then a session whose scan is clean.
    The answers of the two FETCHes, and how many scans the second and third sessions made."""
    cache = RewriteCache(tmp_path)
    generation = ["g1"]
    cache.current_generation = lambda: generation[0]
    answers: list[bytes] = []

    async def body(client: Client) -> None:
        await login_select(client)
        answers.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))
        answers.append(await client.command(b"b", b"UID FETCH 1 (BODY.PEEK[])"))

    asyncio.run(run_with(MockImapServer([CLEAN]), FakeScanner(ScanOutcome("clean", (), (), None, generation="g1")),
                         body, cache=cache, on_oversize=on_scan_error))
    answers.clear()
    generation[0] = "g2"
    second = FakeScanner(outcome)
    asyncio.run(run_with(MockImapServer([CLEAN]), second, body, cache=cache, on_oversize=on_scan_error))
    served = list(answers)
    third = FakeScanner(ScanOutcome("clean", (), (), None, generation="g2"))
    asyncio.run(run_with(MockImapServer([CLEAN]), third, body, cache=cache, on_oversize=on_scan_error))
    assert all(b"plain text" in a for a in answers[2:])
    return served, second.calls, third.calls


@pytest.mark.parametrize("reason", ["timeout", "engine-error"])
def test_a_rescan_that_fails_for_now_serves_what_was_served_and_tries_again(tmp_path: Path, reason: str) -> None:
    tagged = b'X-MailGuard-Result: unscanned; reason="%s"\r\n' % reason.encode() + CLEAN
    served, second, third = _after_an_update(
        tmp_path, ScanOutcome("unscanned", (), (reason,), tagged, generation="g2"), "pass")
    assert [tag + b" OK" in answer for answer, tag in zip(served, (b"a", b"b"))] == [True, True]
    assert all(CLEAN in a and b"unscanned" not in a for a in served)  # the earlier bytes, as they were
    assert second == 2  # not held in the session's memory: the next fetch tries again
    assert third == 1   # nor confirmed in the cache: a later session scans again


@pytest.mark.parametrize("reason", ["timeout", "engine-error"])
def test_a_rescan_that_fails_for_now_under_block_is_withheld(tmp_path: Path, reason: str) -> None:
    notice = b"Subject: could not be scanned\r\n\r\nnotice\r\n"
    served, second, third = _after_an_update(
        tmp_path, ScanOutcome("unscanned", (), (reason,), notice, generation="g2"), "block")
    for answer, tag in zip(served, (b"a", b"b")):
        assert answer.endswith(tag + b" NO [UNAVAILABLE] mailguard: could not scan the message again after a"
                               b" signature update, try later\r\n"), answer
        assert b"plain text" not in answer and b"notice" not in answer
    assert (second, third) == (2, 1)


def test_a_rescan_that_cannot_be_done_for_good_gets_the_new_verdicts_form(tmp_path: Path) -> None:
    tagged = b'X-MailGuard-Result: unscanned; reason="limit"\r\n' + CLEAN
    served, second, third = _after_an_update(
        tmp_path, ScanOutcome("unscanned", (), ("limit",), tagged, generation="g2"), "pass")
    assert all(b'unscanned; reason="limit"' in a for a in served)  # never as if scanned
    assert second == 1  # held in the session's memory
    assert third == 0   # and recorded: not restamped as the old clean record


class FakeHost:
    """The engine as a session sees it: the current config and the counters."""

    def __init__(self, scanning: bool) -> None:
        self.config = SimpleNamespace(scanning=scanning)
        self.counters: dict[str, int] = {}

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount


def test_disable_reaches_an_open_session_and_scans_are_counted_and_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost(scanning=False)
    rewritten = b"X-MailGuard-Result: infected\r\nSubject: invoice\r\n\r\ncleaned\r\n"
    scanner = FakeScanner(ScanOutcome("infected", ("Eicar-Test-Signature",), (), rewritten))
    answers: list[bytes] = []

    async def body(client: Client) -> None:
        await login_select(client)
        answers.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))
        host.config = SimpleNamespace(scanning=True)  # `mailguard enable` while the session is open
        answers.append(await client.command(b"b", b"UID FETCH 1 (BODY.PEEK[])"))

    with caplog.at_level("WARNING"):
        asyncio.run(run_with(MockImapServer([INFECTED]), scanner, body, host=host))
    assert b"EICAR" in answers[0] and b"a OK" in answers[0]  # protection off: relayed unscanned
    assert b"cleaned" in answers[1] and b"EICAR" not in answers[1] and b"b OK" in answers[1]
    assert scanner.calls == 1
    assert host.counters["unscanned"] == 1 and host.counters["messages_scanned"] == 1
    assert host.counters["infected"] == 1 and host.counters["bytes_scanned"] == len(INFECTED)
    assert any("infected: Eicar-Test-Signature" in r.getMessage() for r in caplog.records)


def test_a_withheld_message_counts_as_an_error() -> None:
    host = FakeHost(scanning=True)
    failed = ScanOutcome("infected", ("Eicar",), (), b"X: y\r\n\r\nz\r\n", error="quarantine: full",
                         quarantine_failed=True)

    async def body(client: Client) -> None:
        await login_select(client)
        assert b"a NO [UNAVAILABLE]" in await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])")

    asyncio.run(run_with(MockImapServer([INFECTED]), FakeScanner(failed), body, host=host))
    assert host.counters["errors"] == 1 and host.counters["infected"] == 1


class RefusingServer(MockImapServer):
    """Answers NO to the proxy's fetch of the message text."""

    async def _command(self, command, writer, machine):  # type: ignore[no-untyped-def]
        if command.name == "UID FETCH" and command.raw.rstrip().endswith(b"(UID BODY.PEEK[])"):
            writer.write(command.tag + b" NO [UNAVAILABLE] backend busy\r\n")
            return True
        return await super()._command(command, writer, machine)


def test_an_upstream_no_on_the_body_fetch_ends_the_clients_tag_with_no() -> None:
    answers: list[bytes] = []

    async def body(client: Client) -> None:
        await login_select(client)
        answers.append(await client.command(b"a", b"FETCH 1 (BODY.PEEK[])"))
        answers.append(await client.command(b"b", b"NOOP"))

    asyncio.run(run_with(RefusingServer([CLEAN]), FakeScanner(ScanOutcome("clean", (), (), None)), body))
    assert answers[0].endswith(b"a NO [UNAVAILABLE] mailguard: the server did not send the message, try later\r\n")
    assert b"NIL" not in answers[0] and b"a OK" not in answers[0]
    assert answers[1].endswith(b"b OK NOOP completed\r\n")


class SilentServer(MockImapServer):
    """Never answers the proxy's fetch of the message text (nor anything after it)."""

    async def _command(self, command, writer, machine):  # type: ignore[no-untyped-def]
        if command.name == "UID FETCH" and command.raw.rstrip().endswith(b"(UID BODY.PEEK[])"):
            return True
        return await super()._command(command, writer, machine)


def test_a_server_that_stops_answering_gets_the_client_a_bye_not_a_hang() -> None:
    answers: list[bytes] = []

    async def body(client: Client) -> None:
        await login_select(client)
        await client.send(b"a FETCH 1 (BODY.PEEK[])\r\n")
        answers.append(await asyncio.wait_for(client.reader.read(), 10))  # until the proxy closes

    asyncio.run(run_with(SilentServer([CLEAN]), FakeScanner(ScanOutcome("clean", (), (), None)), body,
                         answer_timeout=0.5))
    assert answers[0].startswith(b"* BYE mailguard: the server stopped answering\r\n"), answers
