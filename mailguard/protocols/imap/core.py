"""The core of the IMAP proxy machine (machine.py): its state, the scheduler of its steps, and
what every step uses: bytes to either side, the server leg held or released, responses filtered
on their way to the client, time-outs.

The steps themselves (the session's own in machine.py, STARTTLS in starttls.py, the FETCH
interception in interception.py, the read-ahead in prefetch.py) take a ``SessionCore``; it knows
none of them, so nothing here imports a step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailguard.errors import LocalProtocolError, MailguardError, RemoteProtocolError
from mailguard.protocols.events import (
    NEED_DATA, Closed, NeedData, SendToClient, SendToServer, Side, StartTls, SwitchToRelay, TlsEstablished,
    TlsFailed,
)
from mailguard.protocols.imap import capabilities as caps
from mailguard.protocols.imap.commands import CommandReader
from mailguard.protocols.imap.events import CacheEntry, Event, Identity, Limit, Notice, Scanned
from mailguard.protocols.imap.flows import NEXT_COMMAND, NEXT_RESPONSE, START, Ask, Flow, Step, Until
from mailguard.protocols.imap.gate import Gate
from mailguard.protocols.imap.identity import SessionIdentity
from mailguard.protocols.imap.limits import DEFAULT_LIMITS, ImapLimits
from mailguard.protocols.imap.memory import MemoryKey, SessionMemory
from mailguard.protocols.imap.responses import Response, ResponseKind, ResponseReader
from mailguard.protocols.imap.view import MailboxView
__all__ = [
    "IDLE_TIMEOUT", "READ_HIGH_WATER", "UPSTREAM_ANSWER_TIMEOUT", "ImapOptions", "ServerClosed", "SessionCore",
    "UpstreamSilent",
]

#: unframed bytes a side may hold before the driver stops reading it (TCP backpressure)
READ_HIGH_WATER = 1024 * 1024
#: RFC 3501 §5.4: an IMAP autologout timer is at least 30 minutes; IDLE clients renew at 29.
IDLE_TIMEOUT = 31 * 60.0
#: how long we wait for the server's next response while one of our own commands (the body
#: fetch of an intercepted FETCH, a read-ahead, a STORE) is unanswered: a few minutes, enough for
#: a large literal on a slow link; then the client hears BYE rather than hanging
#: (docs/architecture.md#lose-nothing)
UPSTREAM_ANSWER_TIMEOUT = 5 * 60.0

_STOPPING = b"* BYE mailguard is stopping, please reconnect\r\n"


class UpstreamSilent(RemoteProtocolError):
    """The server left one of our own commands unanswered for ``answer_timeout``."""

    def __init__(self) -> None:
        super().__init__("mailguard: the server stopped answering")


class ServerClosed(Exception):
    """The server closed the connection: the session ends with it, without a word of ours."""


class _Told(Exception):
    """The session ends quietly: the client was told already (or cannot be)."""


@dataclass
class ImapOptions:
    #: "host:port" of the upstream, part of every cache key
    server_id: str = ""
    limits: ImapLimits = DEFAULT_LIMITS
    #: a rewrite cache is there to ask (CacheLookup, CacheWrite)
    cache: bool = False
    #: TLS is intercepted on this route: the server's STARTTLS is taken, the client's offered
    intercept_tls: bool = False
    #: the client can be offered STARTTLS (we have a certificate for it, or it names the server)
    client_tls: bool = False
    #: transparent mode on a plaintext port: the server's STARTTLS waits for the client's
    #: (starttls.py)
    client_named_tls: bool = False
    #: both legs are already TLS (imaps ports): the greeting is relayed
    implicit_tls: bool = False
    #: a message too large to scan (response.on-scan-error): "pass" delivers it tagged unscanned
    #: where the request allows streaming it (oversize.py); "block" serves a notice instead
    on_oversize: str = "pass"
    #: message bytes fetched upstream per batch, at least one message
    batch_bytes: int = 32 * 1024 * 1024
    #: counters a test or bench reads: scanned, cache_hits, local_answers
    stats: dict[str, int] = field(default_factory=dict)
    read_high_water: int = READ_HIGH_WATER
    idle_timeout: float = IDLE_TIMEOUT
    answer_timeout: float = UPSTREAM_ANSWER_TIMEOUT
    #: a server silent this long in the middle of a response ends the session (limits.server-timeout)
    server_timeout: float | None = None
    #: the signature generation messages are judged by now (None: never stale); what the
    #: session holds is forgotten when it changes
    generation: Callable[[], str | None] = lambda: None
    #: read ahead of a client that fetches message after message (prefetch.py)
    read_ahead: bool = True


class PrefetchLike(Protocol):
    """What the steps ask of the read-ahead (prefetch.Prefetch; a protocol, so that prefetch.py,
    which drives a ``SessionCore``, is not imported here)."""

    @property
    def busy(self) -> bool: ...

    def settle(self) -> Step: ...

    def held(self, key: MemoryKey) -> Step: ...

    def after_answer(self, number: int, uid: int) -> None: ...

    def close(self) -> None: ...


class SessionCore:
    #: the read-ahead (prefetch.Prefetch), set by the machine (ImapProxy) before its first step
    prefetch: PrefetchLike

    def __init__(self, options: ImapOptions | None = None) -> None:
        self.options = options = options or ImapOptions()
        self.limits = options.limits
        self.stats = options.stats
        self.client = CommandReader(options.limits)
        self.server = ResponseReader(options.limits)
        self._client_eof = False
        self._server_eof = False
        self._events: deque[Event] = deque()
        self._flows: list[Flow] = []
        #: the step that gets the server's responses; None: they are relayed as they come
        self.holder: Flow | None = None
        self._current: Flow | None = None
        self._asked: dict[Any, Flow] = {}
        self._ids = 0
        self.done = False
        self._stopping = False
        #: tags forwarded upstream and not yet completed
        self.outstanding: set[bytes] = set()
        self._tag_counter = 0
        # what the client may see
        self.pre_tls_caps: list[bytes] | None = None
        self.offer_starttls = False
        self.client_tls_active = options.implicit_tls
        self.remove_caps: frozenset[str] = frozenset()
        self.identity = SessionIdentity()
        #: what this session served lately (a chunk loop costs one scan, even without the cache)
        self.memory = SessionMemory(generation=options.generation)
        #: message number -> UID of the selected mailbox, as the server told it
        self.view = MailboxView()
        self._select_tag: bytes | None = None
        #: what may pass, either way (default deny: gate.py)
        self.gate = Gate()
        #: handed over to a byte relay (STARTTLS not intercepted)
        self.relayed = False
        #: adds the X-MailGuard-TLS header when policy let a bad server certificate through
        #: (set by the driver: a pure function of the bytes); None: nothing to add
        self.tls_tag: Callable[[bytes], bytes] | None = None
        #: the session's own step (the machine's), and whether it has greeted the client
        self._main: Flow | None = None
        self._opened = False

    # --- the driver's side -------------------------------------------------------------------

    def receive_data(self, side: Side, data: bytes) -> None:
        """Bytes from one side; ``b""`` means that side closed its sending direction."""
        if side is Side.CLIENT:
            if not data:
                if self._client_eof:
                    return
                self._client_eof = True
            self.client.receive_data(data)
        else:
            if not data:
                if self._server_eof:
                    return
                self._server_eof = True
            self.server.receive_data(data)

    def wants_data(self, side: Side) -> bool:
        """Whether the driver should keep reading ``side`` now (backpressure on both legs)."""
        if self.done:
            return False
        if side is Side.CLIENT:
            return self.client.unframed <= self.options.read_high_water
        return self.server.unframed <= self.options.read_high_water

    def next_event(self) -> Event | NeedData:
        while not self._events:
            if self.done:
                return NEED_DATA
            try:
                progressed = self._advance()
            except ServerClosed:
                self._close("the server closed the connection", error=False)
                continue
            except _Told as exc:
                self._close(str(exc), error=True)
                continue
            except MailguardError as exc:  # the peer broke the rules, or a TLS leg was refused
                self._fail(exc)
                continue
            if not progressed:
                return NEED_DATA
        return self._events.popleft()

    def send(self, reply: Scanned | CacheEntry | TlsEstablished | TlsFailed) -> None:
        """The driver's answer to a request (``ScanFetched``, ``CacheLookup``, ``StartTls``)."""
        key = "tls" if isinstance(reply, (TlsEstablished, TlsFailed)) else reply.ident
        flow = self._asked.pop(key, None)
        if flow is None:
            if self.done:
                return
            raise LocalProtocolError(f"nothing asked for {reply!r}")
        flow.reply = reply

    def stop(self) -> None:
        """The engine stops: finish a FETCH being answered, then say so (RFC 9051 §7.1.5)."""
        self._stopping = True

    def timer(self) -> list[Limit]:
        """How long each side may stay silent before the driver calls ``timed_out`` with the
        limit's reason: each limit counts from the later of when it first appeared here and
        when its side was last heard, so one side's bytes never keep the other side's limit
        from running out (a server's keep-alives do not keep a silent client's session)."""
        if self.done:
            return []
        found: list[Limit] = []
        holder = self.holder
        if holder is not None and holder.waiting is NEXT_RESPONSE:
            opening = holder.name == "session" and self.pre_tls_caps is None and not self._opened
            found.append(Limit(self.options.idle_timeout, "idle", Side.SERVER) if opening
                         else Limit(self.options.answer_timeout, "answer", Side.SERVER))
        reading = holder is None or holder.waiting is NEXT_RESPONSE
        if self.options.server_timeout is not None and reading and self.server.buffered:
            # part of a response is here and the rest is awaited (a step busy with a scan may
            # leave whole responses unread: that is not the server's silence)
            found.append(Limit(self.options.server_timeout, "server", Side.SERVER))
        if self._main is not None and self._main.waiting is NEXT_COMMAND:
            found.append(Limit(self.options.idle_timeout, "idle", Side.CLIENT))
        return found

    def timed_out(self, why: str) -> None:
        """Nothing was heard for the time ``timer`` gave."""
        if self.done:
            return
        if why == "answer":
            self._fail(UpstreamSilent())
        elif why == "server":
            # Silent in the middle of a response (limits.server-timeout): the client is told with
            # BYE rather than left waiting (RFC 5530 §3, UNAVAILABLE).
            self.notice("info", "the server stopped in the middle of a response", "timed_out")
            self._fail(RemoteProtocolError(f"[UNAVAILABLE] the server stopped in the middle of a response "
                                           f"for {self.options.server_timeout:g}s"))
        else:
            self._close("idle time-out", error=False)

    def close(self) -> None:
        """The session is over: free what it holds now (bench/imap.py measures the RSS after)."""
        # The steps are dropped, not closed: one of them may be the step running now.
        self.done = True
        self._flows.clear()
        self.holder = None
        self._asked.clear()
        self.memory.close()
        self.prefetch.close()

    # --- helpers of the steps ----------------------------------------------------------------

    def new_tag(self) -> bytes:
        self._tag_counter += 1
        return b"mg%d" % self._tag_counter

    def new_ident(self) -> int:
        self._ids += 1
        return self._ids

    def to_server(self, data: bytes) -> None:
        self._events.append(SendToServer(data))

    def to_client(self, data: bytes) -> None:
        if data:
            self._events.append(SendToClient(data))

    def tell(self, event: Event) -> None:
        self._events.append(event)

    def notice(self, level: str, text: str, counter: str | None = None) -> None:
        """A log line for the driver (``level``: "info", "warning"), maybe a counter to add one to."""
        self._events.append(Notice(level, text, counter))

    def count(self, name: str, amount: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + amount

    @property
    def mailbox(self) -> bytes | None:
        return self.identity.mailbox

    @property
    def uidvalidity(self) -> int | None:
        return self.identity.uidvalidity

    @property
    def cache_identity(self) -> Identity | None:
        """(server, user, mailbox, UIDVALIDITY) once all are known and a cache is there."""
        ident = self.identity
        if not self.options.cache or ident.user is None or ident.mailbox is None or ident.uidvalidity is None:
            return None
        return (self.options.server_id, ident.user, ident.mailbox, ident.uidvalidity)

    def tls_tagged(self, served: bytes, unchanged: bool) -> tuple[bytes, bool]:
        """``served`` as this connection delivers it: with an ``X-MailGuard-TLS`` header when policy
        let the server's bad certificate through (issue 5), else as it is.

        Applied where a message enters the session's memory (from a scan or the rewrite cache), so
        sizes and structures are computed from the tagged bytes; the rewrite cache itself keeps the
        untagged form, since the next connection's certificate may be fine."""
        if self.tls_tag is None:
            return served, unchanged
        return self.tls_tag(served), False

    def spawn(self, step: Step, name: str) -> Flow:
        """Run ``step`` beside the others from the next round (a read-ahead, a scan)."""
        flow = Flow(step, name)
        self._flows.append(flow)
        return flow

    def take_server(self) -> None:
        """The running step gets every server response from now until ``release_server``."""
        # An invariant, not an assert: ``python -O`` keeps it, and a breach ends the session
        # with BYE (next_event) rather than interleaving two steps' responses.
        if self._current is None or self.holder is not None:
            raise LocalProtocolError(f"the server leg taken by {self._current!r} while {self.holder!r} holds it")
        self.holder = self._current

    def release_server(self) -> None:
        if self.holder is self._current:
            self.holder = None

    def response(self) -> Step:
        """The next server response for the step holding the server leg."""
        response = yield NEXT_RESPONSE
        if response is None:
            raise ServerClosed()
        return response

    def quiet(self) -> Step:
        """Until every forwarded command has its tagged answer."""
        if self.outstanding:
            yield Until(lambda: not self.outstanding)

    def forward(self, tag: bytes, raw: bytes) -> None:
        self.outstanding.add(tag)
        self.to_server(raw)

    # --- the scheduler -----------------------------------------------------------------------

    def _advance(self) -> bool:
        progressed = False
        for flow in tuple(self._flows):
            if flow.done or self.done:
                continue
            waiting = flow.waiting
            if waiting is START:
                self._resume(flow, None)
            elif waiting is NEXT_COMMAND:
                event = self.client.next_event()
                if event is NEED_DATA:
                    if not self._client_eof:
                        continue
                    event = None
                self._resume(flow, event)
            elif waiting is NEXT_RESPONSE:
                response = self.server.next_event()
                if response is NEED_DATA:
                    if not self._server_eof:
                        continue
                    response = None
                self._resume(flow, response)
            elif isinstance(waiting, Until):
                if not waiting.test():
                    continue
                self._resume(flow, None)
            elif isinstance(waiting, Ask):
                if flow.reply is START:
                    continue
                reply, flow.reply = flow.reply, START
                self._resume(flow, reply)
            else:  # pragma: no cover - a step yielded something unknown
                raise LocalProtocolError(f"a step waits for {waiting!r}")
            progressed = True
        if self.done:
            return True
        if self.holder is None:
            while True:
                response = self.server.next_event()
                if response is NEED_DATA:
                    if self._server_eof:
                        raise ServerClosed()
                    break
                self.relay(response)
                progressed = True
        if self._stopping and self.holder is None and self._opened:
            self.to_client(_STOPPING)
            self._close("the engine stops", error=False)
            return True
        return progressed

    def _resume(self, flow: Flow, value: Any) -> None:
        self._current = flow
        try:
            request = flow.gen.send(value)
        except StopIteration:
            flow.done = True
            if flow in self._flows:
                self._flows.remove(flow)
            if self.holder is flow:
                self.holder = None
            return
        finally:
            self._current = None
        flow.waiting = request
        if isinstance(request, Ask):
            event = request.event
            self._asked["tls" if isinstance(event, StartTls) else event.ident] = flow
            self._events.append(event)

    def _close(self, reason: str, *, error: bool) -> None:
        if self.done:
            return
        self._events.append(Closed(reason, error))
        self.close()

    def _fail(self, exc: MailguardError) -> None:
        if self.done:
            return
        self.to_client(b"* BYE " + str(exc).encode("ascii", "replace")[:200] + b"\r\n")
        self._close(str(exc), error=True)

    def switch_to_relay(self) -> None:
        """Hand the session to a byte relay from here (STARTTLS not intercepted)."""
        self.relayed = True
        self._events.append(SwitchToRelay(self.client.discard_buffered(), self.server.discard_buffered()))
        self.close()

    def end_told(self, reason: str) -> None:
        raise _Told(reason)

    # --- what every response passing to the client goes through -------------------------------

    def relay(self, response: Response) -> None:
        """Track state from ``response`` and pass it on, filtered."""
        self.to_client(self.filter_response(response))

    def filter_response(self, response: Response) -> bytes:
        """The bytes the client gets for a response not part of an intercepted FETCH."""
        self.observe(response)
        # Every client FETCH of text is intercepted: FETCH data here is unsolicited or answers a
        # relayed metadata FETCH, and carries nothing else; unknown responses carry nothing.
        passed = self.gate.response(response)
        if passed.dropped:
            self.notice("warning", "dropped from a server response nobody asked for: "
                         + b" ".join(passed.dropped).decode("ascii", "replace")[:200])
        if passed.fetch is not None and passed.fetch.uid is not None:
            self.view.learn(passed.fetch.number, passed.fetch.uid)
        if response.kind is ResponseKind.CONTINUATION or response.word == "FETCH" or not passed.raw:
            return passed.raw
        if response.word in ("CAPABILITY", "OK", "NO", "BAD", "PREAUTH", "BYE"):
            return caps.rewrite_capabilities(passed.raw, self.remove_caps)
        return passed.raw

    def observe(self, response: Response) -> None:
        self.identity.on_response(response)
        if response.kind is ResponseKind.UNTAGGED and response.number is not None:
            if response.word == "EXISTS":
                self.view.on_exists(response.number)
            elif response.word == "EXPUNGE":
                self.view.on_expunge(response.number)
        if response.kind is not ResponseKind.TAGGED or response.tag is None:
            return
        if response.tag == self._select_tag:
            self.view.selected(response.word == "OK")
            self._select_tag = None
        self.client.command_completed(response.tag)
        self.outstanding.discard(response.tag)
