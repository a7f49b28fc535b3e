"""The IMAP proxy as a sans-I/O machine (RFC 9051), the twin of ``Pop3Proxy`` (protocols/pop3.py).

One ``ImapProxy`` sits between one client and one server. The driver (proxy/imap.py) feeds it
bytes from either side (``receive_data``), takes events out (``next_event``) and answers the
requests among them (``send``): scans, the rewrite cache's file I/O, TLS switches. No sockets,
no asyncio, no ssl, no files and no clock: byte scripts drive it in the tests
(tests/protocols/imap/test_machine.py) and in the fuzzer (bench/fuzz_imap.py --machine).

Theory of operation

- Default deny both ways (gate.py): a command goes on only when it is on the allow-list of the
  session's state, a server response only with what a client may be handed; a response the
  proxy cannot frame as every client frames it ends the session (responses.py).
- Commands are relayed as they come (pipelining kept) except those the proxy must own:
  STARTTLS (starttls.py), COMPRESS (refused: it would hide every later byte, RFC 4978), ENABLE
  (filtered), CAPABILITY and LOGIN before the client's TLS (answered from the pre-TLS view), and
  every FETCH that asks for message bytes or anything derived from them (interception.py).
  Those wait until earlier commands are answered, then run alone, so responses keep the order
  the server gave them.
- The exchanges that go on at once (the client's commands, our own commands upstream, the
  read-ahead, scans) are generator steps (flows.py). At most one step holds the server leg
  (``holder``) and gets its responses; with none holding it, responses are relayed, filtered.
- Server responses are parsed only when someone takes them: a step busy with a scan leaves
  the server's bytes in the reader, and the driver stops reading past ``read_high_water``
  (``wants_data``), so neither a flooding server nor a slow client grows memory.
- Timeouts are the driver's clock and the machine's decision (``timer``, ``timed_out``): the
  client's idle time, a server silent in the middle of a response (limits.server-timeout), and
  a server that leaves one of our own commands unanswered (``answer_timeout``); each limit
  watches one side, so one side's bytes never keep the other's limit from running out.
"""

from __future__ import annotations

from mailguard.errors import LocalProtocolError, RemoteProtocolError
from mailguard.protocols.imap import capabilities as caps
from mailguard.protocols.imap.commands import AppendPart, Command, ContinuationData, LiteralChunk, Reply
from mailguard.protocols.imap.core import (
    IDLE_TIMEOUT, READ_HIGH_WATER, UPSTREAM_ANSWER_TIMEOUT, ImapOptions, SessionCore,
)
from mailguard.protocols.imap.flows import NEXT_COMMAND, NEXT_RESPONSE, Step
from mailguard.protocols.imap.gate import check_framing
from mailguard.protocols.imap.interception import intercept_fetch
from mailguard.protocols.imap.prefetch import Prefetch
from mailguard.protocols.imap.responses import ResponseKind
from mailguard.protocols.imap.starttls import client_starttls, upstream_starttls

__all__ = ["IDLE_TIMEOUT", "READ_HIGH_WATER", "UPSTREAM_ANSWER_TIMEOUT", "ImapOptions", "ImapProxy"]


class ImapProxy(SessionCore):
    def __init__(self, options: ImapOptions | None = None) -> None:
        super().__init__(options)
        self.prefetch = Prefetch(self)
        #: the session's own step: the client's commands, one after the other
        self._main = self.spawn(self._session(), "session")

    # --- the session -------------------------------------------------------------------------

    def _session(self) -> Step:
        self.take_server()
        try:
            opened = yield from self._open()
        finally:
            self.release_server()
        if not opened:
            self._close("the session did not open (no greeting, BYE, or PREAUTH refused)", error=False)
            return
        self._opened = True
        while True:
            event = yield NEXT_COMMAND
            if event is None:
                self._close("the client closed the connection", error=False)
                return
            if isinstance(event, Reply):
                self.to_client(event.data)
            elif isinstance(event, ContinuationData):
                if not self.gate.continuation_allowed(event):
                    # Not DONE, not a SASL response: maybe a command slipped past the allow-list.
                    raise RemoteProtocolError("the client sent something other than DONE or a SASL "
                                              "response after a continuation request")
                self.identity.on_auth_line(event)
                self.to_server(event.raw)
            elif isinstance(event, LiteralChunk):
                self.to_server(event.data)
            elif isinstance(event, AppendPart):
                yield from self._append_part(event)
            else:
                yield from self._on_command(event)

    def _open(self) -> Step:
        """Read the greeting; upgrade the upstream with STARTTLS when it offers it."""
        greeting = yield NEXT_RESPONSE
        if greeting is None:
            return False
        if greeting.kind is not ResponseKind.UNTAGGED or greeting.word not in ("OK", "PREAUTH", "BYE"):
            raise RemoteProtocolError("the server did not greet with OK, PREAUTH or BYE")
        check_framing(greeting)  # imaplib reads a literal after a greeting ending in "{n}"
        options = self.options
        if options.implicit_tls or not options.intercept_tls:
            if greeting.word == "PREAUTH":
                self.identity.on_response(greeting)
                self.gate.preauthenticated()
                if not options.implicit_tls:
                    # RFC 9051 §7.1.4: PREAUTH on a cleartext connection cannot be told from an
                    # attacker skipping STARTTLS. Without TLS interception we have no TLS to
                    # insist on, so this is relayed as the client would have seen it.
                    self.notice("info", "PREAUTH greeting on a cleartext upstream")
            self.to_client(caps.rewrite_capabilities(greeting.raw))
            return greeting.word != "BYE"
        if greeting.word == "PREAUTH":
            # RFC 9051 §7.1.4: "Clients that require mandatory TLS MUST close the connection
            # after receiving the PREAUTH response on a non-protected port" (STARTTLS stripping).
            self.to_client(b"* BYE PREAUTH on a cleartext connection refused (RFC 9051 7.1.4)\r\n")
            return False
        if greeting.word == "BYE":
            self.to_client(greeting.raw)
            return False
        # Pre-TLS text is untrusted (ALERT spoofing, docs/pitfalls.md#text-before-tls): only
        # capabilities are used.
        pre = caps.capabilities_in(greeting.raw)
        if not pre:
            pre = yield from self._ask_capabilities()
        if caps.has(pre, "STARTTLS") and not options.client_named_tls:
            yield from upstream_starttls(self, opening=True)
        self.pre_tls_caps = pre
        self.offer_starttls = caps.has(pre, "STARTTLS") and (options.client_tls or options.client_named_tls)
        if not self.offer_starttls:
            # Nothing TLS for the client to do with us; the upstream leg is TLS anyway.
            self.remove_caps = frozenset({"STARTTLS", "LOGINDISABLED"})
            self.client_tls_active = True
        shown = caps.filter_capabilities(pre, self.remove_caps)
        self.to_client(b"* OK [CAPABILITY " + b" ".join(shown) + b"] IMAP proxy ready\r\n")
        return True

    def _ask_capabilities(self) -> Step:
        tag = self.new_tag()
        self.to_server(tag + b" CAPABILITY\r\n")
        found: list[bytes] = []
        while True:
            response = yield NEXT_RESPONSE
            if response is None:
                raise RemoteProtocolError("the server closed the connection during CAPABILITY")
            found = caps.capabilities_in(response.raw) or found
            if response.kind is ResponseKind.TAGGED and response.tag == tag:
                if response.word != "OK":
                    raise RemoteProtocolError("the server refused CAPABILITY")
                return found

    def _on_command(self, command: Command) -> Step:
        name = command.name
        if name not in ("FETCH", "UID FETCH"):
            # Our read-ahead's commands first (a FETCH we may answer from memory need not wait).
            yield from self.prefetch.settle()
        refused = self.gate.refusal(command)
        if refused is not None:
            # Default deny: what we do not understand never reaches the server (gate.py).
            self.notice("warning", f"refused the client command {name[:40]}")
            self.refuse(command, refused)
        elif name == "STARTTLS":
            yield from self.quiet()
            yield from client_starttls(self, command)
        elif (name == "CAPABILITY" and self.offer_starttls and not self.client_tls_active
              and not self.identity.authenticated):
            # The upstream is TLS already; the client still sees the pre-TLS view until it
            # does STARTTLS with us (RFC 9051 §6.2.1: capabilities change with TLS).
            if self.pre_tls_caps is None:
                raise LocalProtocolError("STARTTLS offered with no capabilities kept from before TLS")
            shown = caps.filter_capabilities(self.pre_tls_caps, self.remove_caps)
            self.to_client(b"* CAPABILITY " + b" ".join(shown) + b"\r\n" + command.tag
                           + b" OK CAPABILITY completed\r\n")
        elif (name in ("LOGIN", "AUTHENTICATE") and self.offer_starttls and not self.client_tls_active
              and caps.has(self.pre_tls_caps, "LOGINDISABLED")):
            self.to_client(command.tag + b" NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")
            self.client.command_completed(command.tag)
        elif name == "ENABLE":
            self._enable(command)
        elif name in ("FETCH", "UID FETCH"):
            yield from intercept_fetch(self, command)
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
            self.client.resume()
        self.client.command_completed(command.tag)  # IDLE, AUTHENTICATE: no continuation
        self.to_client(command.tag + b" " + text)

    def _append_part(self, part: AppendPart) -> Step:
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
                self.notice("warning", "refused the client command APPEND")
                if part.literal is not None and not part.literal.sync:
                    # Its literal is on its way and would be read as commands: ended instead.
                    raise RemoteProtocolError("APPEND refused, with its literal already sent; closing")
                self.client.literal_refused()
                self.refuse(command, refused)
                return
            yield from self.prefetch.settle()
            yield from self.quiet()
            self.gate.sent(command)
            self.outstanding.add(part.tag)
        self.to_server(part.data)
        if part.literal is None or not part.literal.sync:
            return
        # A synchronising literal (RFC 9051 §4.3): the client waits for "+", and so must we,
        # from the server, before passing it on; a tagged answer instead (NO [TOOBIG], say)
        # is relayed and the client sends no literal.
        refused = yield from self._server_continuation(part.tag)
        if refused:
            self.client.literal_refused()
        else:
            self.to_client(b"+ Ready for literal data\r\n")

    def _server_continuation(self, tag: bytes) -> Step:
        """Wait for the server's "+" to our literal (not relayed: the client gets ours); True
        when ``tag`` was answered instead. Other responses pass on as they come."""
        self.take_server()
        try:
            while True:
                response = yield from self.response()
                if response.kind is ResponseKind.CONTINUATION:
                    return False
                self.relay(response)
                if response.kind is ResponseKind.TAGGED and response.tag == tag:
                    return True
        finally:
            self.release_server()

    def _enable(self, command: Command) -> None:
        words = command.args.split()
        kept = [word for word in words if word.decode("ascii", "replace").upper() in caps.ENABLEABLE]
        if not kept:
            self.to_client(b"* ENABLED\r\n" + command.tag + b" OK ENABLE completed\r\n")
            return
        self.forward(command.tag, command.tag + b" ENABLE " + b" ".join(kept) + b"\r\n")

