"""The POP3 proxy as a sans-I/O state machine (RFC 1939, RFC 2449, RFC 2595, RFC 5034).

One ``Pop3Proxy`` sits between one client and one server. The driver feeds it bytes from either
side (``receive_data``), takes events out (``next_event``) and reports what it did about the
requests among them (``send``). No sockets, no asyncio, no ssl: the byte-script tests drive it
with plain bytes. Its parts: reading commands (pop3_commands), framing (pop3_framing), what a
scanned message becomes on the wire (pop3_delivery, pop3_sizes), the STLS switch (pop3_stls),
CAPA filtering (pop3_capa), states and caps (pop3_states), events (pop3_events).

Theory of operation

- Commands run one at a time. A client may pipeline; its later commands wait in the client
  buffer (capped) until the answer to the current one is complete. That keeps the FIFO of
  RFC 2449 §6.6 trivially right, and PIPELINING is not advertised (pop3_capa).
- Every command is checked against an allow-list per RFC state (``ALLOWED_COMMANDS``): a command
  whose answer we cannot frame must never reach the server. Lines with a CR or NUL inside are
  refused too: a server that ends lines at a bare CR would see two commands where we saw one.
- Multi-line answers (RFC 1939 §3) are recognised from the command that asked for them.
  RETR and TOP answers are collected whole, de-stuffed and handed out as ``ScanMessage``; the
  driver answers with ``ScanResult`` and only then does any byte of the message go to the client.
- Every answer reaches the client framed as every client library frames it
  (docs/pitfalls.md#pop3-line-ends-and-dot-stuffing): an answer with a bare CR or LF, or a dot
  line that is not stuffed, is read once (pop3_framing.read_message), that reading is what is
  scanned, and it is delivered re-stuffed with CRLF line ends; status lines with a CR inside end
  the session. LIST and UIDL lines are checked one by one and junk lines dropped (pop3_listing),
  CAPA lines kept only when printable and allowed (pop3_capa). The greeting is checked as
  leniently as clients check it ("+" opens the session): whether this is POP3, and so whether it
  is scanned, was decided by the port (proxy/session.py).
- TOP: the client's ``TOP n k`` goes upstream as ``TOP n TOP_WHOLE_MESSAGE``. RFC 1939 §7 makes
  a count larger than the body the entire message, so the scan always sees the whole message and
  the client gets the first k lines of the *rewritten* message, whose header matches what RETR
  will deliver (docs/pitfalls.md#pop3-top-is-a-download). We avoid an upstream RETR because
  servers such as Dovecot set \\Seen on RETR, visible to IMAP clients of the same mailbox, and TOP
  leaves flags alone.
- Sizes (docs/pitfalls.md#pop3-sizes-after-a-rewrite): a clean message passes byte for byte, so its
  sizes never change. For a rewritten message the RETR status line's octet count is rewritten to
  what is delivered, and LIST/STAT answers later in the session report the delivered size. A LIST
  issued before the message was ever retrieved reports the server's size: knowing the rewritten size
  in advance would mean downloading and scanning the whole mailbox at LIST time.
- A message larger than ``max_message`` cannot be held for scanning: with ``on_oversize="pass"``
  it is streamed through with an ``X-MailGuard-Result: unscanned`` header put first, with
  ``"block"`` the client gets ``-ERR`` (the message stays on the server; a ``+OK`` notice would
  let a delete-after-download client remove it) and the answer is drained from the server.
- Read-ahead (``Pop3Options.read_ahead``, pop3_readahead): after a RETR the proxy may fetch the
  next message itself and scan it while the client is still reading, then answer the client's
  RETR of it at once. It runs as a command of the proxy's own, so the one-at-a-time rule holds.
- STLS (RFC 2595 §4): any byte the client sent after ``STLS`` CRLF, and any byte the server sent
  after its ``+OK``, ends the session (command / response injection,
  docs/pitfalls.md#command-injection-after-starttls). The
  upstream leg is switched first; only when it is up does the client get its ``+OK`` and switch.
  With TLS interception off (``TlsMode.RELAY``) the session becomes a byte relay instead.
- The server dropping in the middle of an answer gives the client ``-ERR``; a message already
  partly streamed ends without its terminating dot, so the client sees it incomplete.
"""

from __future__ import annotations

from collections import deque

from mailguard.errors import LocalProtocolError
from mailguard.protocols.pop3_capa import filter_capa, filter_mechanisms
from mailguard.protocols.pop3_commands import TOP_WHOLE_MESSAGE, Pending, message_number, read_command
from mailguard.protocols.pop3_delivery import MessageDelivery
from mailguard.protocols.pop3_events import (
    NEED_DATA, Closed, Event, LinesDropped, NeedData, PeerError, ScanMessage, ScanResult, SendToClient,
    SendToServer, Side, TlsEstablished, TlsFailed,
)
from mailguard.protocols.pop3_framing import (
    CRLF, LineTooLong, ReceiveBuffer, StreamGuard, read_message, stuff, unstuff,
)
from mailguard.protocols.pop3_listing import read_listing
from mailguard.protocols.pop3_readahead import ReadAhead
from mailguard.protocols.pop3_sizes import rewrite_listing, rewrite_single_size
from mailguard.protocols.pop3_stls import StlsSwitch
from mailguard.protocols.pop3_states import (
    ALLOWED_COMMANDS, TRANSITIONS, Phase, Pop3Limits, Pop3Options, State, TlsMode,
)

__all__ = [
    "ALLOWED_COMMANDS", "TOP_WHOLE_MESSAGE", "Phase", "Pop3Limits", "Pop3Options", "Pop3Proxy", "State",
    "TlsMode",
]

# Phases in which the server's bytes are an answer being framed: read them whatever their size
# (the framing caps them).
_READING_AN_ANSWER = frozenset({
    Phase.BODY, Phase.GREETING, Phase.STATUS, Phase.AHEAD_SIZE, Phase.AHEAD_LISTING, Phase.AHEAD_STATUS,
    Phase.AHEAD_BODY,
})


class Pop3Proxy(MessageDelivery, ReadAhead, StlsSwitch):
    def __init__(self, options: Pop3Options | None = None) -> None:
        self.options = options or Pop3Options()
        self.limits = self.options.limits
        self.state = State.GREETING
        self.phase = Phase.GREETING
        self.client_tls = self.options.implicit_tls
        self._client = ReceiveBuffer()
        self._server = ReceiveBuffer()
        self._client_eof = False
        self._server_eof = False
        self._events: deque[Event] = deque()
        self._pending: Pending | None = None
        self._status = b""
        self._original = b""          # the message being scanned, as every client will read it
        self._wire: bytes | None = b""  # its wire form, forwarded as is when unchanged; None: re-stuff
        self._server_size = 0         # its size as the server sent it (for later LIST/STAT sizes)
        self._guard = StreamGuard()   # checks an over-size message streamed through
        self._size_delta: dict[int, int] = {}
        #: bytes of the current over-size answer streamed or drained so far (``max_stream``)
        self.streamed = 0
        self.stream_overrun = False
        self._deleted: set[int] = set()
        self._init_read_ahead()
        self._step_for = {
            Phase.GREETING: self._on_greeting,
            Phase.COMMAND: self._on_command,
            Phase.STATUS: self._on_status,
            Phase.BODY: self._on_body,
            Phase.SASL_CLIENT: self._on_sasl_client,
            Phase.SCAN: self._waiting_for_driver,
            Phase.STREAM_PASS: self._on_stream,
            Phase.STREAM_DROP: self._on_stream,
            Phase.STLS_REPLY: self._on_stls_reply,
            Phase.TLS_SERVER: self._waiting_for_driver,
            Phase.TLS_CLIENT: self._waiting_for_driver,
            Phase.AHEAD_SIZE: self._on_ahead_size,
            Phase.AHEAD_LISTING: self._on_ahead_listing,
            Phase.AHEAD_STATUS: self._on_ahead_status,
            Phase.AHEAD_BODY: self._on_ahead_body,
            Phase.AHEAD_SCAN: self._waiting_for_driver,
            Phase.AHEAD_DROP: self._on_ahead_drop,
            Phase.DONE: self._waiting_for_driver,
        }

    # --- the driver's side -------------------------------------------------------------------

    def receive_data(self, side: Side, data: bytes) -> None:
        """Bytes from one side; ``b""`` means that side closed its sending direction."""
        if side is Side.CLIENT:
            if data:
                self._client.feed(data)
            else:
                self._client_eof = True
        else:
            if data:
                self._server.feed(data)
            else:
                self._server_eof = True

    def wants_data(self, side: Side) -> bool:
        """Whether the driver should keep reading ``side`` now (backpressure on both legs)."""
        if self.phase is Phase.DONE:
            return False
        if side is Side.CLIENT:
            return len(self._client) < self.limits.max_client_backlog
        if self.phase in _READING_AN_ANSWER:
            return True
        return len(self._server) < self.limits.max_server_backlog

    def next_event(self) -> Event | NeedData:
        while not self._events:
            try:
                progressed = self._step_for[self.phase]()
            except PeerError as exc:
                self._fail_peer(exc)
                break
            if not progressed:
                return NEED_DATA
        return self._events.popleft() if self._events else NEED_DATA

    def send(self, event: ScanResult | TlsEstablished | TlsFailed) -> None:
        """Report the outcome of a ``ScanMessage`` or ``StartTls`` request."""
        if isinstance(event, ScanResult):
            if self.phase is Phase.AHEAD_SCAN:
                self._ahead_scanned(event)
                return
            if self.phase is not Phase.SCAN:
                raise LocalProtocolError(f"no message is being scanned (phase {self.phase.value})")
            if event.refusal:
                self._original = self._wire = b""
                self._reply_local(b"-ERR [SYS/TEMP] mailguard: " + event.refusal.encode("utf-8", "replace"))
                self._command_done()
            else:
                self._deliver(event.message)
        elif isinstance(event, TlsEstablished):
            self._tls_established(event.side)
        elif isinstance(event, TlsFailed):
            if self.phase not in (Phase.TLS_SERVER, Phase.TLS_CLIENT):
                raise LocalProtocolError("no TLS switch in progress")
            if event.side is Side.SERVER:
                self._close(f"TLS to the server failed: {event.reason}", error=True,
                            client_line=b"-ERR [SYS/PERM] mailguard: TLS to the server failed")
            else:
                self._close(f"TLS with the client failed: {event.reason}", error=True)
        else:
            raise LocalProtocolError(f"cannot send {event!r}")

    # --- phases ------------------------------------------------------------------------------

    def _waiting_for_driver(self) -> bool:
        # Nothing may arrive while the driver scans or switches TLS: the client waits for its
        # answer, the server for its next command. A byte now is pipelining (client, kept in
        # the buffer) except while the server leg switches, where it is an injection attempt.
        # Once StartTls(CLIENT) is out the client's handshake is under way: its bytes come over
        # TLS (the first command may share a write with its Finished) and wait for COMMAND.
        if self.phase is Phase.TLS_SERVER:
            self._refuse_plaintext_during_switch()
        return False

    def _on_greeting(self) -> bool:
        line = self._server_line(self.limits.max_status_line)
        if line is None:
            if self._server_eof:
                raise PeerError(Side.SERVER, "the server closed before its greeting")
            return False
        # Checked as leniently as clients check it: poplib takes any greeting that starts with
        # "+" (RFC 1939 §4 says "+OK"), and the session is scanned whatever follows. The port
        # decided that this is POP3 (proxy/session.py), never the greeting.
        if line[:1] == b"+":
            self._emit_client(line + CRLF)
            self._transition("<greeting>", True)
            self.phase = Phase.COMMAND
        elif line.startswith(b"-ERR"):
            self._emit_client(line + CRLF)
            self._transition("<greeting>", False)
            self._close("the server refused the session in its greeting", error=True)
        else:
            raise PeerError(Side.SERVER, "the server's greeting is not a POP3 greeting")
        return True

    def _on_command(self) -> bool:
        if self._server and not self._server_eof:
            raise PeerError(Side.SERVER, "the server sent data while no command was pending")
        if self._server_eof:
            self._close("the server closed the connection", error=False)
            return True
        line = self._client_line(self.limits.max_command_line)
        if line is None:
            if self._client_eof:
                self._close("the client closed the connection", error=False)
                return True
            return False
        self._command(line)
        return True

    def _on_status(self) -> bool:
        line = self._server_line(self.limits.max_status_line)
        if line is None:
            if self._server_eof:
                raise PeerError(Side.SERVER, "the server closed the connection during an answer")
            return False
        pending = self._pending
        assert pending is not None
        ok = line.startswith(b"+OK")
        if pending.verb == "AUTH" and line[:1] == b"+" and not ok:
            # A SASL challenge "+ base64" (RFC 5034 §4): the client answers with one line.
            self._emit_client(line + CRLF)
            self.phase = Phase.SASL_CLIENT
            return True
        if not ok and not line.startswith(b"-ERR"):
            raise PeerError(Side.SERVER, "the server answered neither +OK nor -ERR")
        if ok and pending.multiline:
            self._status = line
            self.phase = Phase.BODY
            return True
        self._finish_single(pending, line, ok)
        return True

    def _on_body(self) -> bool:
        pending = self._pending
        assert pending is not None
        is_message = pending.verb in ("RETR", "TOP")
        try:
            block = self._server_block(self.limits.max_message if is_message else self.limits.max_listing)
        except LineTooLong as exc:
            if not is_message:
                raise PeerError(Side.SERVER, str(exc)) from exc
            self._start_oversize(pending)
            return True
        if block is None:
            return False
        if is_message:
            # What reaches the client is the very bytes of the message scanned, or that message
            # re-stuffed; never a block a client could frame otherwise (read_message says why).
            message, canonical = read_message(block, self._server.block_stuffed)
            self._original = message
            self._wire = block if canonical else None
            self._server_size = len(message) if canonical else len(unstuff(block))
            self.phase = Phase.SCAN
            self._events.append(ScanMessage(pending.number, message, pending.verb))
            return True
        if pending.verb in ("CAPA", "AUTH"):
            lines = read_message(block)[0].split(CRLF)[:-1]
            if pending.verb == "CAPA":
                lines = filter_capa(lines, stls_offered=self._stls_offered())
            else:
                lines = filter_mechanisms(lines)
            body = stuff(CRLF.join(lines) + CRLF) if lines else b".\r\n"
        else:  # LIST or UIDL: the only other multi-line answers (pop3_commands.is_multiline)
            listing, dropped = read_listing(pending.verb, block)
            if dropped:
                self._events.append(LinesDropped(pending.verb, dropped))
            if pending.verb == "LIST":
                self._note_sizes(listing)
                self._listed = True
                if self._size_delta:
                    listing = rewrite_listing(listing, self._size_delta)
            body = listing + b".\r\n"
        self._emit_client(self._status + CRLF + body)
        self._command_done()
        return True

    def _on_sasl_client(self) -> bool:
        if self._server:
            raise PeerError(Side.SERVER, "the server sent data before the client answered its challenge")
        line = self._client_line(self.limits.max_sasl_line)
        if line is None:
            if self._client_eof:
                self._close("the client closed the connection during authentication", error=False)
                return True
            return False
        if b"\r" in line or b"\0" in line:
            # As for commands (pop3_commands): a server ending lines at a bare CR would take
            # what follows it for a command of its own.
            raise PeerError(Side.CLIENT, "CR or NUL inside a SASL response")
        self._events.append(SendToServer(line + CRLF))
        self.phase = Phase.STATUS
        return True

    def _on_stream(self) -> bool:
        chunk, finished = self._server.take_stream_chunk()
        self.streamed += len(chunk)
        if self.streamed > self.limits.max_stream and not finished:
            # Past every limit: ended, not passed on forever. Streaming: the client has part of
            # the message and no dot, so it knows the answer is incomplete.
            self.stream_overrun = True
            self._close(f"the server's answer passed {self.limits.max_stream} bytes", error=True)
            return True
        if chunk and self.phase is Phase.STREAM_PASS:
            if not self._guard.passes(chunk):
                # Too late to re-encode (part of it is out): ended, so the client holds an
                # incomplete answer rather than one it frames otherwise (StreamGuard).
                self._close("the server's over-size message has a line end or a dot line that clients "
                            "read differently; the session is ended", error=True)
                return True
            self._emit_client(chunk)
        if finished:
            self._command_done()
            return True
        if self._server_eof:
            # Part of the message is out already: no -ERR can follow it. Closing without the
            # terminating dot leaves the client with an answer it knows is incomplete.
            self._close("the server closed the connection in the middle of a message", error=True)
            return True
        return bool(chunk)

    # --- commands ----------------------------------------------------------------------------

    def _command(self, line: bytes) -> None:
        pending = read_command(line, self.state, stls_available=not self.client_tls and self._stls_offered())
        if isinstance(pending, bytes):
            self._reply_local(pending)
            return
        if pending.verb in ("RETR", "TOP") and self._serve_from_ahead(pending):
            return
        self._pending = pending
        self._events.append(SendToServer(pending.forward))
        if pending.verb != "STLS":
            self.phase = Phase.STATUS
            return
        if len(self._client):
            # Command injection (CVE-2011-0411 class, docs/pitfalls.md#command-injection-after-starttls):
            # what follows STLS in the same read would otherwise be executed as if it came over TLS.
            self._events.pop()
            self._pending = None
            raise PeerError(Side.CLIENT, "the client sent data after STLS")
        self.phase = Phase.STLS_REPLY

    def _finish_single(self, pending: Pending, line: bytes, ok: bool) -> None:
        if ok and self._size_delta:
            line = rewrite_single_size(
                pending.verb, bool(pending.args), line, self._size_delta, self._deleted
            )
        if ok and pending.verb == "DELE" and pending.args:
            number = message_number(pending.args[0])
            if number is not None:
                self._deleted.add(number)
        elif ok and pending.verb == "RSET":
            self._deleted.clear()
        elif ok and pending.verb == "STAT":
            self._note_message_count(line)
        elif ok and pending.verb == "LIST":
            self._note_sizes(line)
        self._emit_client(line + CRLF)
        self._transition(pending.verb, ok)
        if self.state is State.CLOSED:
            self._close("QUIT", error=False)
        else:
            self._command_done()

    # --- helpers -----------------------------------------------------------------------------

    def _client_line(self, cap: int) -> bytes | None:
        try:
            return self._client.take_line(cap)
        except LineTooLong as exc:
            raise PeerError(Side.CLIENT, f"the client sent a {exc}") from exc

    def _server_line(self, cap: int) -> bytes | None:
        """One status line from the server. A CR or NUL inside is an error: a client that ends
        lines at a bare CR would read two answers where the proxy read one."""
        try:
            line = self._server.take_line(cap)
        except LineTooLong as exc:
            raise PeerError(Side.SERVER, f"the server sent a {exc}") from exc
        if line is not None and (b"\r" in line or b"\0" in line):
            raise PeerError(Side.SERVER, "the server sent a CR or NUL inside a line")
        return line

    def _server_block(self, cap: int) -> bytes | None:
        """The server's multi-line body (``ReceiveBuffer.take_block``); None until it is whole.
        A server that closes before it is whole is a PeerError; LineTooLong past ``cap``."""
        block = self._server.take_block(cap)
        if block is None and self._server_eof:
            raise PeerError(Side.SERVER, "the server closed the connection in a multi-line answer")
        return block

    def _reply_local(self, line: bytes) -> None:
        self._emit_client(line + CRLF)

    def _emit_client(self, data: bytes) -> None:
        self._events.append(SendToClient(data))

    def _transition(self, verb: str, ok: bool) -> None:
        self.state = TRANSITIONS.get((self.state, verb, ok), self.state)

    def _command_done(self) -> None:
        self._pending = None
        self._status = b""
        self.phase = Phase.COMMAND

    def _fail_peer(self, exc: PeerError) -> None:
        if exc.side is Side.CLIENT:
            self._close(str(exc), error=True, client_line=b"-ERR mailguard: " + str(exc).encode())
        elif self.phase is Phase.STREAM_PASS:
            self._close(str(exc), error=True)
        else:
            self._close(str(exc), error=True,
                        client_line=b"-ERR [SYS/TEMP] mailguard: " + str(exc).encode())

    def _close(self, reason: str, *, error: bool, client_line: bytes | None = None) -> None:
        if self.phase is Phase.DONE:
            return
        if client_line is not None:
            self._emit_client(client_line + CRLF)
        self.state = State.CLOSED
        self.phase = Phase.DONE
        self._events.append(Closed(reason, error))
