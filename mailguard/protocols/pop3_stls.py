"""The STLS switch of the POP3 proxy machine (RFC 2595 §4;
docs/pitfalls.md#command-injection-after-starttls, docs/pitfalls.md#response-injection-after-starttls).

The upstream leg is switched first; only when it is up does the client get its ``+OK`` and
switch. Any byte the client sent after ``STLS`` CRLF before its TLS handshake starts, and any
byte the server sent after its ``+OK``, ends the session (command / response injection); what the
client sends once its handshake is under way is TLS-protected and is processed normally. With TLS interception off
(``TlsMode.RELAY``) the session becomes a byte relay instead. A mixin of ``Pop3Proxy``
(pop3.py), which owns the state it reads and writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.errors import LocalProtocolError
from mailguard.protocols.pop3_events import PeerError, Side, StartTls, SwitchToRelay
from mailguard.protocols.pop3_framing import CRLF
from mailguard.protocols.pop3_states import Phase, State, TlsMode

if TYPE_CHECKING:
    from mailguard.protocols.pop3_core import Pop3Core as _Base
else:
    _Base = object

__all__ = ["StlsSwitch"]


class StlsSwitch(_Base):
    def _on_stls_reply(self) -> bool:
        self._refuse_plaintext_during_switch()
        line = self._server_line(self.limits.max_status_line)
        if line is None:
            if self._server_eof:
                raise PeerError(Side.SERVER, "the server closed the connection after STLS")
            return False
        if not line.startswith(b"+OK"):
            # The server refused: the client hears so and the session stays as it was (the client
            # decides whether to go on without TLS; we never upgrade only one leg).
            self._emit_client(line + CRLF)
            self._command_done()
            return True
        if len(self._server):
            # Response injection (docs/pitfalls.md#response-injection-after-starttls): bytes
            # after +OK would be read as if they came over TLS.
            raise PeerError(Side.SERVER, "the server sent data after its +OK to STLS")
        self._status = line
        if self.options.tls is TlsMode.RELAY:
            self._emit_client(line + CRLF)
            self.state = State.RELAYED
            self.phase = Phase.DONE
            self._events.append(SwitchToRelay())
        else:
            self.phase = Phase.TLS_SERVER
            self._events.append(StartTls(Side.SERVER))
        return True

    def _stls_offered(self) -> bool:
        return not self.client_tls and self.options.tls is not TlsMode.REFUSE

    def _refuse_plaintext_during_switch(self) -> None:
        if len(self._client):
            raise PeerError(Side.CLIENT, "the client sent data during the STLS switch")
        if self.phase is not Phase.STLS_REPLY and len(self._server):
            raise PeerError(Side.SERVER, "the server sent data during the STLS switch")

    def _tls_established(self, side: Side) -> None:
        if self.phase is Phase.DONE:
            return  # already closed (an injection was caught during the switch)
        # Plaintext injection is a question only up to the client's switch: whatever the client
        # sent before it is checked here (and at STLS / STLS_REPLY). The driver starts the
        # client's TLS with no await after this check, so bytes buffered once the client's
        # handshake is done came over TLS (its first command may share a write with its
        # Finished) and are processed as usual.
        if side is Side.SERVER and not self._switch_is_clean():
            return
        if side is Side.SERVER and self.phase is Phase.TLS_SERVER:
            self.phase = Phase.TLS_CLIENT
            self._events.append(StartTls(Side.CLIENT, preface=self._status + CRLF))
        elif side is Side.CLIENT and self.phase is Phase.TLS_CLIENT:
            # RFC 2595 §4: everything learnt before TLS is forgotten; the client asks CAPA again.
            self.client_tls = True
            self._size_delta.clear()
            self._command_done()
        else:
            raise LocalProtocolError(f"unexpected TLS completion for the {side.value} in {self.phase.value}")

    def _switch_is_clean(self) -> bool:
        try:
            self._refuse_plaintext_during_switch()
        except PeerError as exc:
            self._fail_peer(exc)
            return False
        return True
