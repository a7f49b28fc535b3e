"""The asyncio IMAP session: one client, one upstream server, the sans-I/O machines between.

Default deny both ways (protocols/imap/gate.py): a command goes on only when it is on the
allow-list of the session's state, a server response only with what a client may be handed.
Commands are relayed as they come (pipelining kept) except those the proxy must own:
STARTTLS (both legs, buffered bytes refused: RFC 9051 §6.2.1,
docs/pitfalls.md#starttls-and-tls-switches),
COMPRESS (refused: it would hide every later byte, RFC 4978), ENABLE (filtered),
CAPABILITY and LOGIN before the client's TLS (answered from the pre-TLS view), and every
FETCH that asks for message bytes or anything derived from them (imap_fetch.py). Those
wait until earlier commands are answered, then run alone, so responses keep the order
the server gave them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailguard.errors import MailguardError, RemoteProtocolError
from mailguard.protocols.imap import capabilities as caps
from mailguard.protocols.imap.commands import (
    AppendPart, Command, CommandReader, ContinuationData, LiteralChunk, Reply,
)
from mailguard.protocols.imap.gate import Gate, check_framing
from mailguard.protocols.imap.limits import DEFAULT_LIMITS, ImapLimits
from mailguard.protocols.imap.responses import NEED_DATA, Kind, Response, ResponseReader
from mailguard.proxy.conn import Conn
from mailguard.proxy.imap_cache import RewriteCache, host_generation
from mailguard.proxy.imap_fetch import intercept_fetch
from mailguard.proxy.imap_identity import SessionIdentity
from mailguard.proxy.imap_readahead import ReadAhead
from mailguard.proxy.imap_served import UPSTREAM_ANSWER_TIMEOUT, SessionMemory
from mailguard.proxy.imap_starttls import ClientNamedTls, check_starttls_answer, starttls_named_by_client
from mailguard.proxy.imap_view import MailboxView
from mailguard.proxy.context import ClientTold

log = logging.getLogger("mailguard.proxy.imap")

#: unframed bytes a side may hold before we stop reading it (TCP backpressure)
READ_HIGH_WATER = 1024 * 1024
#: RFC 3501 §5.4: an IMAP autologout timer is at least 30 minutes; IDLE clients renew at 29.
IDLE_TIMEOUT = 31 * 60.0


class ScanOutcomeLike(Protocol):
    status: str
    detections: tuple[str, ...]
    reasons: tuple[str, ...]
    delivered: bytes | None
    error: str
    quarantine_failed: bool
    generation: str
    located: tuple[tuple[str, str], ...]


class Scanner(Protocol):
    async def scan(self, raw: bytes, source: str) -> ScanOutcomeLike: ...


@dataclass
class ImapContext:
    """What a session needs from the engine; built once per route by the proxy core."""

    scanner: Scanner
    #: "host:port" of the upstream, part of every cache key
    server_id: str
    cache: RewriteCache | None = None
    limits: ImapLimits = DEFAULT_LIMITS
    #: offered to the client as STARTTLS when the upstream offers it; None: not offered
    client_tls: ssl.SSLContext | None = None
    #: performs STARTTLS's handshake on the upstream leg and verifies the certificate (raises
    #: to refuse it); None: TLS is not intercepted, and a client's STARTTLS turns the session
    #: into a byte relay rather than being refused (refusing it would be a downgrade)
    upgrade_upstream: Callable[[Conn], Awaitable[None]] | None = None
    #: transparent mode on a plaintext port: the server's STARTTLS waits for the client's, and is
    #: verified against the name the client asks for (imap_starttls.py)
    client_named_tls: ClientNamedTls | None = None
    #: both legs are already TLS (imaps ports): the greeting is relayed
    implicit_tls: bool = False
    #: a message too large to scan (response.on-scan-error): "pass" delivers it tagged unscanned
    #: where the request allows streaming it (imap_oversize.py); "block" serves a notice instead
    on_oversize: str = "pass"
    #: message bytes fetched upstream per batch, at least one message
    batch_bytes: int = 32 * 1024 * 1024
    idle_timeout: float = IDLE_TIMEOUT
    #: set when the engine stops: sessions say BYE once no FETCH is half answered
    draining: asyncio.Event | None = None
    stats: dict[str, int] = field(default_factory=dict)
    #: see UPSTREAM_ANSWER_TIMEOUT
    answer_timeout: float = UPSTREAM_ANSWER_TIMEOUT
    #: the engine (its current config and counters); None in tests without one: always scan
    host: Any = None
    #: the session's logger (engine sessions name the session in each line)
    log: Any = None
    #: unframed bytes a side may hold before we stop reading it (limits.max-session-buffer)
    read_high_water: int = READ_HIGH_WATER
    #: a server silent this long in the middle of a response ends the session (limits.server-timeout)
    server_timeout: float | None = None


class SwitchToRelay(Exception):
    """The client asked for TLS we do not intercept: from here on bytes pass untouched."""

    def __init__(self, client_early: bytes, server_early: bytes) -> None:
        super().__init__("switching to a byte relay")
        self.client_early = client_early
        self.server_early = server_early


class Side:
    """A connection whose bytes feed a sans-I/O reader; ``next_event`` awaits the next event."""

    def __init__(self, conn: Conn, reader: CommandReader | ResponseReader, early: bytes = b"",
                 high_water: int = READ_HIGH_WATER, partial_timeout: float | None = None) -> None:
        self.conn = conn
        self.reader = reader
        self.high_water = high_water
        #: silence allowed while part of an item is buffered, when ``next_event`` has no time-out
        self.partial_timeout = partial_timeout
        self.eof = False
        self._ready = asyncio.Event()
        # b"" means end of stream to the readers: only real bytes are fed here.
        for data in (early, conn.attach(self._sink)):
            if data:
                reader.receive_data(data)
        if conn.eof:
            self._sink(b"")

    def _sink(self, data: bytes) -> None:
        if not data:
            if self.eof:
                return
            self.eof = True
        self.reader.receive_data(data)
        if self.reader.unframed > self.high_water:
            self.conn.set_reading(False)
        self._ready.set()

    async def next_event(self, timeout: float | None = None):  # type: ignore[no-untyped-def]
        """The next event, or None at EOF."""
        while True:
            event = self.reader.next_event()
            if event is not NEED_DATA:
                return event
            if self.eof:
                return None
            self.conn.set_reading(True)
            self._ready.clear()
            wait = timeout
            if wait is None and self.reader.buffered:
                wait = self.partial_timeout
            await asyncio.wait_for(self._ready.wait(), wait)

    def write(self, data: bytes) -> None:
        self.conn.write(data)


class ImapSession:
    def __init__(self, client: Conn, upstream: Conn, context: ImapContext, *, client_early: bytes = b"",
                 upstream_early: bytes = b"") -> None:
        self.context = context
        self.client = Side(client, CommandReader(context.limits), client_early, context.read_high_water)
        self.upstream = Side(upstream, ResponseReader(context.limits), upstream_early, context.read_high_water,
                             context.server_timeout)
        #: tags forwarded upstream and not yet completed
        self.outstanding: set[bytes] = set()
        self._quiet = asyncio.Event()
        self._quiet.set()
        #: the FETCH being handled alone, which gets every upstream response meanwhile
        self.interceptor: Callable[[Response], Awaitable[None]] | None = None
        self._tag_counter = 0
        # what the client may see
        self.pre_tls_caps: list[bytes] | None = None
        self.offer_starttls = False
        self.client_tls_active = context.implicit_tls
        self.remove_caps: frozenset[str] = frozenset()
        self.identity = SessionIdentity()
        #: what this session served lately (a chunk loop costs one scan, even without the cache)
        self.memory = SessionMemory(generation=host_generation(context.host) if context.host is not None
                                    else lambda: None)
        #: message number -> UID of the selected mailbox, as the server told it
        self.view = MailboxView()
        self._select_tag: bytes | None = None
        self.readahead = ReadAhead(self)
        #: what may pass, either way (default deny: gate.py)
        self.gate = Gate()
        #: handed over to a byte relay (STARTTLS not intercepted)
        self.relayed = False

    # --- helpers used by the FETCH interception -----------------------------------------------

    def new_tag(self) -> bytes:
        self._tag_counter += 1
        return b"mg%d" % self._tag_counter

    def send_upstream(self, data: bytes) -> None:
        self.upstream.write(data)

    def send_client(self, data: bytes) -> None:
        self.client.write(data)

    async def drain_client(self) -> None:
        await self.client.conn.drain()

    @property
    def log(self) -> Any:
        """The session's logger (the engine's names the session in each line), else the module's."""
        return self.context.log or log

    @property
    def mailbox(self) -> bytes | None:
        return self.identity.mailbox

    @property
    def uidvalidity(self) -> int | None:
        return self.identity.uidvalidity

    @property
    def cache_identity(self) -> tuple[str, str, bytes, int] | None:
        """(server, user, mailbox, UIDVALIDITY) once all are known; with a UID it names a message for good."""
        ident = self.identity
        if ident.user is None or ident.mailbox is None or ident.uidvalidity is None:
            return None
        return (self.context.server_id, ident.user, ident.mailbox, ident.uidvalidity)

    # --- the session ----------------------------------------------------------------------------

    async def run(self) -> None:
        upstream_task: asyncio.Task[None] | None = None
        client_task: asyncio.Task[None] | None = None
        stop_task: asyncio.Task[None] | None = None
        try:
            if not await self._open():
                return
            upstream_task = asyncio.ensure_future(self._upstream_loop())
            client_task = asyncio.ensure_future(self._client_loop())
            tasks = {upstream_task, client_task}
            if self.context.draining is not None:
                stop_task = asyncio.ensure_future(self._bye_when_draining(self.context.draining))
                tasks.add(stop_task)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        except SwitchToRelay as switch:
            from mailguard.proxy.relay import relay

            self.relayed = True

            if upstream_task is not None:
                upstream_task.cancel()
            self.client.conn.detach()
            self.upstream.conn.detach()
            await relay(self.client.conn, self.upstream.conn, client_early=switch.client_early,
                        server_early=switch.server_early, idle_timeout=self.context.idle_timeout)
        except ClientTold as exc:
            self.log.warning("IMAP session refused: %s", exc)
        except MailguardError as exc:  # the peer broke the rules, or the upstream TLS was refused
            self.log.warning("IMAP session ended: %s", exc)
            self.send_client(b"* BYE " + str(exc).encode("ascii", "replace")[:200] + b"\r\n")
        except (ConnectionError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.log.info("IMAP session ended: %s", exc)
        finally:
            for task in (upstream_task, client_task, stop_task):
                if task is not None:
                    task.cancel()
            self.readahead.close()
            # The session and its read-ahead refer to each other: free the messages now, not
            # when the garbage collector finds the cycle (bench/imap.py measures the RSS after).
            self.memory.close()
            self.client.conn.close()
            self.upstream.conn.close()

    async def _bye_when_draining(self, draining: asyncio.Event) -> None:
        """The engine stops: finish a FETCH being answered, then say so (RFC 9051 §7.1.5)."""
        await draining.wait()
        while self.interceptor is not None:
            await asyncio.sleep(0.05)
        self.send_client(b"* BYE mailguard is stopping, please reconnect\r\n")
        await self.drain_client()

    async def _open(self) -> bool:
        """Read the greeting; upgrade the upstream with STARTTLS when it offers it."""
        greeting = await self.upstream.next_event(self.context.idle_timeout)
        if greeting is None:
            return False
        if greeting.kind is not Kind.UNTAGGED or greeting.word not in ("OK", "PREAUTH", "BYE"):
            raise RemoteProtocolError("the server did not greet with OK, PREAUTH or BYE")
        check_framing(greeting)  # imaplib reads a literal after a greeting ending in "{n}"
        if self.context.implicit_tls or self.context.upgrade_upstream is None:
            if greeting.word == "PREAUTH":
                self.identity.on_response(greeting)
                self.gate.preauthenticated()
                if not self.context.implicit_tls:
                    # RFC 9051 §7.1.4: PREAUTH on a cleartext connection cannot be told from an
                    # attacker skipping STARTTLS. Without TLS interception we have no TLS to
                    # insist on, so this is relayed as the client would have seen it.
                    log.info("PREAUTH greeting on a cleartext upstream")
            self.send_client(caps.rewrite_capabilities(greeting.raw))
            return greeting.word != "BYE"
        if greeting.word == "PREAUTH":
            # RFC 9051 §7.1.4: "Clients that require mandatory TLS MUST close the connection
            # after receiving the PREAUTH response on a non-protected port" (STARTTLS stripping).
            self.send_client(b"* BYE PREAUTH on a cleartext connection refused (RFC 9051 7.1.4)\r\n")
            return False
        if greeting.word == "BYE":
            self.send_client(greeting.raw)
            return False
        # Pre-TLS text is untrusted (ALERT spoofing, docs/pitfalls.md#text-before-tls): only
        # capabilities are used.
        pre = caps.capabilities_in(greeting.raw) or await self._ask_capabilities()
        named = self.context.client_named_tls
        if caps.has(pre, "STARTTLS") and named is None:
            await self._upstream_starttls()
        self.pre_tls_caps = pre
        self.offer_starttls = caps.has(pre, "STARTTLS") and (self.context.client_tls is not None or named is not None)
        if not self.offer_starttls:
            # Nothing TLS for the client to do with us; the upstream leg is TLS anyway.
            self.remove_caps = frozenset({"STARTTLS", "LOGINDISABLED"})
            self.client_tls_active = True
        shown = caps.filter_capabilities(pre, self.remove_caps)
        self.send_client(b"* OK [CAPABILITY " + b" ".join(shown) + b"] IMAP proxy ready\r\n")
        return True

    async def _ask_capabilities(self) -> list[bytes]:
        tag = self.new_tag()
        self.send_upstream(tag + b" CAPABILITY\r\n")
        found: list[bytes] = []
        while True:
            response = await self.upstream.next_event(self.context.idle_timeout)
            if response is None:
                raise RemoteProtocolError("the server closed the connection during CAPABILITY")
            found = caps.capabilities_in(response.raw) or found
            if response.kind is Kind.TAGGED and response.tag == tag:
                if response.word != "OK":
                    raise RemoteProtocolError("the server refused CAPABILITY")
                return found

    async def _upstream_starttls(self) -> None:
        tag = self.new_tag()
        self.send_upstream(tag + b" STARTTLS\r\n")
        while True:
            response = await self.upstream.next_event(self.context.idle_timeout)
            if response is None:
                raise RemoteProtocolError("the server closed the connection during STARTTLS")
            if response.kind is Kind.TAGGED and response.tag == tag:
                break
        # our reader holds every byte received (conn.py keeps none)
        check_starttls_answer(response, bool(self.upstream.reader.buffered))
        assert self.context.upgrade_upstream is not None
        await self.context.upgrade_upstream(self.upstream.conn)

    async def _client_loop(self) -> None:
        while True:
            event = await self.client.next_event(self.context.idle_timeout)
            if event is None:
                return
            if isinstance(event, Reply):
                self.send_client(event.data)
            elif isinstance(event, ContinuationData):
                if not self.gate.continuation_allowed(event):
                    # Not DONE, not a SASL response: maybe a command slipped past the allow-list.
                    raise RemoteProtocolError("the client sent something other than DONE or a SASL "
                                              "response after a continuation request")
                self.identity.on_auth_line(event)
                self.send_upstream(event.raw)
            elif isinstance(event, LiteralChunk):
                self.send_upstream(event.data)  # the drain below is the backpressure
            elif isinstance(event, AppendPart):
                await self._append_part(event)
            else:
                await self._on_command(event)
            await self.upstream.conn.drain()

    async def _on_command(self, command: Command) -> None:
        name = command.name
        if name not in ("FETCH", "UID FETCH"):
            # Our read-ahead's commands first (a FETCH we may answer from memory need not wait).
            await self.readahead.settle()
        refused = self.gate.refusal(command)
        if refused is not None:
            # Default deny: what we do not understand never reaches the server (gate.py).
            self.log.warning("refused the client command %s", name[:40])
            self.refuse(command, refused)
        elif name == "STARTTLS":
            await self.wait_quiet()
            await self._client_starttls(command)
        elif name == "CAPABILITY" and self.offer_starttls and not self.client_tls_active and not self.identity.authenticated:
            # The upstream is TLS already; the client still sees the pre-TLS view until it
            # does STARTTLS with us (RFC 9051 §6.2.1: capabilities change with TLS).
            assert self.pre_tls_caps is not None
            shown = caps.filter_capabilities(self.pre_tls_caps, self.remove_caps)
            self.send_client(b"* CAPABILITY " + b" ".join(shown) + b"\r\n" + command.tag + b" OK CAPABILITY completed\r\n")
        elif (name in ("LOGIN", "AUTHENTICATE") and self.offer_starttls and not self.client_tls_active
              and caps.has(self.pre_tls_caps, "LOGINDISABLED")):
            self.send_client(command.tag + b" NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")
            self.client.reader.command_completed(command.tag)
        elif name == "ENABLE":
            self._enable(command)
        elif name in ("FETCH", "UID FETCH"):
            await intercept_fetch(self, command)
        else:
            self.identity.on_command(command)
            self.gate.sent(command)
            if name in ("SELECT", "EXAMINE"):
                self.view.reset(selecting=True)
                self._select_tag = command.tag
            elif name in ("CLOSE", "UNSELECT"):
                self.view.reset()
            self.forward(command.tag, command.raw)

    def refuse(self, command: Command, text: bytes) -> None:
        """Answer ``command`` ourselves with ``text``; the command reader goes on as after any answer."""
        if command.name == "STARTTLS":
            self.client.reader.resume()
        self.client.reader.command_completed(command.tag)  # IDLE, AUTHENTICATE: no continuation
        self.send_client(command.tag + b" " + text)

    async def _append_part(self, part: AppendPart) -> None:
        """An upload (APPEND) streamed to the server as the client sends it, never held whole.

        What is scanned on upload: nothing. An APPEND is the user's own mail going to the user's
        own mailbox (Sent, Drafts, a copy moved in from elsewhere); default deny
        (docs/architecture.md#default-deny) is about what reaches the client unscanned, and
        whatever is uploaded is scanned like any other message when a client fetches it back."""
        if part.first:
            command = Command(raw=part.data, tag=part.tag, name="APPEND",
                              args_at=part.data.upper().find(b" APPEND") + len(b" APPEND"))
            refused = self.gate.refusal(command)
            if refused is not None:
                self.log.warning("refused the client command APPEND")
                if part.literal is not None and not part.literal.sync:
                    # Its literal is on its way and would be read as commands: ended instead.
                    raise RemoteProtocolError("APPEND refused, with its literal already sent; closing")
                self.client.reader.literal_refused()
                self.refuse(command, refused)
                return
            await self.readahead.settle()
            await self.wait_quiet()
            self.gate.sent(command)
            self.outstanding.add(part.tag)
            self._quiet.clear()
        self.send_upstream(part.data)
        if part.literal is None or not part.literal.sync:
            return
        # A synchronising literal (RFC 9051 §4.3): the client waits for "+", and so must we,
        # from the server, before passing it on; a tagged answer instead (NO [TOOBIG], say)
        # is relayed and the client sends no literal.
        refused = await self._server_continuation(part.tag)
        if refused:
            self.client.reader.literal_refused()
        else:
            self.send_client(b"+ Ready for literal data\r\n")

    async def _server_continuation(self, tag: bytes) -> bool:
        """Wait for the server's "+" to our literal (not relayed: the client gets ours); True
        when ``tag`` was answered instead. Other responses pass on as they come."""
        answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def watch(response: Response) -> None:
            if not answered.done():
                if response.kind is Kind.CONTINUATION:
                    answered.set_result(False)
                    return
                if response.kind is Kind.TAGGED and response.tag == tag:
                    answered.set_result(True)
            self.relay(response)
            await self.client.conn.drain()

        self.interceptor = watch
        try:
            return await asyncio.wait_for(answered, self.context.answer_timeout)
        finally:
            self.interceptor = None

    def forward(self, tag: bytes, raw: bytes) -> None:
        self.outstanding.add(tag)
        self._quiet.clear()
        self.send_upstream(raw)

    async def wait_quiet(self) -> None:
        """Until every forwarded command has its tagged answer."""
        await self._quiet.wait()

    def _enable(self, command: Command) -> None:
        words = command.args.split()
        kept = [word for word in words if word.decode("ascii", "replace").upper() in caps.ENABLEABLE]
        if not kept:
            self.send_client(b"* ENABLED\r\n" + command.tag + b" OK ENABLE completed\r\n")
            return
        self.forward(command.tag, command.tag + b" ENABLE " + b" ".join(kept) + b"\r\n")

    async def _client_starttls(self, command: Command) -> None:
        if self.context.upgrade_upstream is None and not self.context.implicit_tls:
            # TLS is not intercepted here: the client's TLS goes to the server, unscanned.
            self.send_upstream(command.raw)
            raise SwitchToRelay(self.client.reader.discard_buffered(), self.upstream.reader.discard_buffered())
        if not self.offer_starttls or self.client_tls_active:
            self.client.reader.resume()
            self.send_client(command.tag + b" BAD STARTTLS not available now\r\n")
            return
        if self.client.reader.buffered:
            # Command injection (CVE-2011-0411 class, docs/pitfalls.md#command-injection-after-starttls):
            # whatever followed STARTTLS in plaintext is refused with the connection.
            raise RemoteProtocolError("data after STARTTLS before the TLS handshake; closing")
        if self.context.client_named_tls is not None:
            await starttls_named_by_client(self, command, self.context.client_named_tls)
        else:
            self.send_client(command.tag + b" OK Begin TLS negotiation now\r\n")
            assert self.context.client_tls is not None
            # No await between the OK and the switch: Conn.start_tls pauses reading before it
            # first yields, so no plaintext byte can slip in behind the check above.
            await self.client.conn.start_tls(self.context.client_tls, server_side=True)
        self.client_tls_active = True
        self.remove_caps = frozenset({"STARTTLS", "LOGINDISABLED"})
        self.client.reader.resume()

    async def _upstream_loop(self) -> None:
        while True:
            try:
                response = await self.upstream.next_event(None)
            except asyncio.TimeoutError:
                # Silent in the middle of a response (limits.server-timeout): the client is
                # told with BYE rather than left waiting (RFC 5530 §3, UNAVAILABLE).
                if self.context.host is not None:
                    self.context.host.count("timed_out")
                raise RemoteProtocolError(f"[UNAVAILABLE] the server stopped in the middle of a response "
                                          f"for {self.upstream.partial_timeout:g}s") from None
            if response is None:
                return
            if self.interceptor is not None:
                await self.interceptor(response)
            else:
                self.relay(response)
                # A client that does not read stops us reading the server (bounded memory).
                await self.client.conn.drain()

    # --- what every response passing to the client goes through -------------------------------

    def relay(self, response: Response) -> None:
        """Track state from ``response`` and pass it on, filtered."""
        self.send_client(self.filter_response(response))

    def filter_response(self, response: Response) -> bytes:
        """The bytes the client gets for a response not part of an intercepted FETCH."""
        self.observe(response)
        # Every client FETCH of text is intercepted: FETCH data here is unsolicited or answers a
        # relayed metadata FETCH, and carries nothing else; unknown responses carry nothing.
        passed = self.gate.response(response)
        if passed.dropped:
            self.log.warning(
                "dropped from a server response nobody asked for: %s",
                b" ".join(passed.dropped).decode("ascii", "replace")[:200])
        if passed.fetch is not None and passed.fetch.uid is not None:
            self.view.learn(passed.fetch.number, passed.fetch.uid)
        if response.kind is Kind.CONTINUATION or response.word == "FETCH" or not passed.raw:
            return passed.raw
        if response.word in ("CAPABILITY", "OK", "NO", "BAD", "PREAUTH", "BYE"):
            return caps.rewrite_capabilities(passed.raw, self.remove_caps)
        return passed.raw

    def observe(self, response: Response) -> None:
        self.identity.on_response(response)
        if response.kind is Kind.UNTAGGED and response.number is not None:
            if response.word == "EXISTS":
                self.view.on_exists(response.number)
            elif response.word == "EXPUNGE":
                self.view.on_expunge(response.number)
        if response.kind is not Kind.TAGGED or response.tag is None:
            return
        if response.tag == self._select_tag:
            self.view.selected(response.word == "OK")
            self._select_tag = None
        self.client.reader.command_completed(response.tag)
        self.outstanding.discard(response.tag)
        if not self.outstanding:
            self._quiet.set()


async def serve_imap(client: Conn, upstream: Conn, context: ImapContext, *, client_early: bytes = b"",
                     upstream_early: bytes = b"") -> None:
    """The protocol handler the proxy core calls for an IMAP connection pair."""
    await ImapSession(client, upstream, context, client_early=client_early, upstream_early=upstream_early).run()
