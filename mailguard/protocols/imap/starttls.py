"""STARTTLS on both legs (RFC 9051 §6.2.1, docs/pitfalls.md#starttls-and-tls-switches).

The server leg is upgraded at the session's start when the server offers STARTTLS (an upstream
that offers it is never used in plaintext). The client's STARTTLS is ours to answer: any byte it
sent after the command, and any byte the server sent after its OK, ends the session (command /
response injection, docs/pitfalls.md#command-injection-after-starttls).

Transparent mode on a plaintext port (``client_named_tls``): certificates name hosts, not
addresses, so the server leg cannot be verified before the client says which server it wants.
The server's STARTTLS therefore waits for the client's: our STARTTLS goes upstream when the
client sends its own; the driver answers the client's OK, reads the server name from its
ClientHello, switches and verifies the server leg against that name (or joins both legs for an
excluded domain), and only then completes the client's handshake. A client that never asks for
STARTTLS stays in plaintext on both legs, as it chose; LOGINDISABLED is still honoured.
Without TLS interception the client's STARTTLS turns the session into a byte relay (refusing it
would be a downgrade).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.events import Side, StartTls, TlsFailed
from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.flows import NEXT_RESPONSE, Ask, Step
from mailguard.protocols.imap.responses import Response, ResponseKind

if TYPE_CHECKING:
    from mailguard.protocols.imap.core import SessionCore

__all__ = ["check_starttls_answer", "client_starttls", "upstream_starttls"]


def check_starttls_answer(answer: Response, more: bool) -> None:
    """Refuse what must not follow our STARTTLS upstream: a refusal after the server offered it
    (never a fallback to plaintext: docs/architecture.md#tls-stance,
    docs/pitfalls.md#starttls-stripping-and-preauth), or ``more`` bytes behind its OK, sent in
    plaintext where only the TLS handshake may come
    (docs/pitfalls.md#response-injection-after-starttls)."""
    if answer.word != "OK":
        raise RemoteProtocolError("the server offered STARTTLS and then refused it")
    if more:
        raise RemoteProtocolError("the server sent data after its STARTTLS answer; refusing it")


def upstream_starttls(machine: "SessionCore", *, opening: bool = False) -> Step:
    """Our STARTTLS on the server leg, then the switch. At the opening the step holds the server
    leg already and nothing is relayed; later, responses before its answer are relayed."""
    tag = machine.new_tag()
    machine.to_server(tag + b" STARTTLS\r\n")
    if not opening:
        machine.take_server()
    try:
        while True:
            response = yield NEXT_RESPONSE
            if response is None:
                raise RemoteProtocolError("the server closed the connection during STARTTLS")
            if response.kind is ResponseKind.TAGGED and response.tag == tag:
                break
            if not opening:
                machine.relay(response)
    finally:
        if not opening:
            machine.release_server()
    # the reader holds every byte received (the driver keeps none)
    check_starttls_answer(response, bool(machine.server.buffered))
    reply = yield Ask(StartTls(Side.SERVER))
    if isinstance(reply, TlsFailed):
        raise RemoteProtocolError(reply.reason)


def client_starttls(machine: "SessionCore", command: Command) -> Step:
    options = machine.options
    if not options.intercept_tls and not options.implicit_tls:
        # TLS is not intercepted here: the client's TLS goes to the server, unscanned.
        machine.to_server(command.raw)
        machine.switch_to_relay()
        return
    if not machine.offer_starttls or machine.client_tls_active:
        machine.client.resume()
        machine.to_client(command.tag + b" BAD STARTTLS not available now\r\n")
        return
    if machine.client.buffered:
        # Command injection (CVE-2011-0411 class, docs/pitfalls.md#command-injection-after-starttls):
        # whatever followed STARTTLS in plaintext is refused with the connection.
        raise RemoteProtocolError("data after STARTTLS before the TLS handshake; closing")
    # The command reader reads nothing more until the switch (``resume``); in transparent mode
    # the driver also stops reading the socket, so the ClientHello stays there for the TLS layer.
    if options.client_named_tls:
        # The driver defers the server's handshake until the client names the server.
        yield from upstream_starttls(machine)
        if machine.client.buffered:
            raise RemoteProtocolError("data after STARTTLS before the TLS handshake; closing")
    # The driver writes the OK and switches in one step: no plaintext byte can slip in behind
    # the check above.
    reply = yield Ask(StartTls(Side.CLIENT, command.tag + b" OK Begin TLS negotiation now\r\n"))
    if isinstance(reply, TlsFailed):
        machine.end_told(f"TLS with the client failed: {reply.reason}")
    if options.client_named_tls and machine.server.buffered:
        # The driver stopped reading the server at its OK, yet bytes came in before its
        # handshake: plaintext a man in the middle wrote, which would reach the client inside
        # its TLS (docs/pitfalls.md#response-injection-after-starttls).
        raise RemoteProtocolError("the server sent data during the STARTTLS switch; refusing it")
    machine.client_tls_active = True
    machine.remove_caps = frozenset({"STARTTLS", "LOGINDISABLED"})
    machine.client.resume()
