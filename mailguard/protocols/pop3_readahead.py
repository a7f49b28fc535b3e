"""Read-ahead: fetch and scan message n+1 while the client is still receiving message n.

A mixin of ``Pop3Proxy`` (pop3.py). RETR runs strictly one message at a time, so without it
the server's work, the scan and the proxy's own copying all sit in the client's wait for every
message (issue 6: ~0.7 ms added per 100 KB message against ~0.25 ms for the whole direct fetch).
With it, the answer to the client's next ``RETR n+1`` is usually ready when the command arrives.

How it stays safe
- POP3 locks the maildrop for the session (RFC 1939 §8): message numbers and contents cannot
  change under us, so a message fetched ahead is the one ``RETR n+1`` would return.
- It goes upstream as ``TOP n+1 2147483647`` (the whole message, pop3_commands), which leaves
  the server's flags alone: a message the client never asks for is not marked \\Seen for IMAP
  clients of the same mailbox. The cost, said in the docs: a message served from read-ahead is
  not marked \\Seen either (Dovecot marks RETR'd messages; POP3 clients never see that flag).
- It runs as a command of the proxy's own: while it is in flight the client's next command waits
  in its buffer (the one-command-at-a-time rule of pop3.py), and the read-ahead's answer is
  framed, capped and scanned exactly like a RETR answer. Nothing of it reaches the client unless
  the client asks for that message; then it gets the scanned, rewritten message.
- Only after a RETR, in TRANSACTION, for a message neither deleted in this session nor past the
  count the server gave (STAT) or past one it refused. Memory: at most one message held ahead,
  under the same ``max_message`` cap; a longer one is drained and dropped, and the client's RETR
  then goes upstream as usual.
- The scan of a message fetched ahead is a real scan: counted, logged and, when infected,
  quarantined, even if the client never asks for it (at most one message per session).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailguard.protocols.pop3_commands import TOP_WHOLE_MESSAGE, Pending
from mailguard.protocols.pop3_events import PeerError, ScanMessage, ScanResult, SendToServer, Side
from mailguard.protocols.pop3_framing import LineTooLong, unstuff
from mailguard.protocols.pop3_states import Phase, State

if TYPE_CHECKING:
    from mailguard.protocols.pop3 import Pop3Proxy

    _Base = Pop3Proxy
else:
    _Base = object

__all__ = ["Ahead", "ReadAhead"]


@dataclass(frozen=True, slots=True)
class Ahead:
    """A message fetched ahead and scanned, waiting for the client to ask for it."""

    number: int
    status: bytes          # the server's status line for the TOP that fetched it
    original: bytes        # de-stuffed
    wire: bytes            # as received (still stuffed)
    delivered: bytes | None  # the scan's rewrite; None: the original as it is


class ReadAhead(_Base):
    def _init_read_ahead(self) -> None:
        self._ahead: Ahead | None = None
        self._ahead_number = 0
        self._ahead_status = b""
        self._ahead_original = b""
        self._ahead_wire = b""
        #: No read-ahead at or past this number (the server's count, or a message it refused).
        self._ahead_ceiling: int | None = None

    def _maybe_read_ahead(self, number: int) -> None:
        """After a RETR answer went out: fetch ``number`` ahead when that can be useful."""
        if (
            not self.options.read_ahead
            or self.state is not State.TRANSACTION
            or self.phase is not Phase.COMMAND
            or len(self._client)  # the client's next command is here already: serve it
            or number in self._deleted
            or (self._ahead_ceiling is not None and number >= self._ahead_ceiling)
        ):
            return
        self._ahead = None
        self._ahead_number = number
        self._events.append(SendToServer(b"TOP %d %d\r\n" % (number, TOP_WHOLE_MESSAGE)))
        self.phase = Phase.AHEAD_STATUS

    def drop_read_ahead(self) -> None:
        """Forget a message fetched ahead (the driver's settings changed since it was scanned);
        the client's RETR of it then goes upstream and is scanned under the new settings."""
        self._ahead = None

    def _note_message_count(self, stat_line: bytes) -> None:
        """STAT said how many messages there are: never read ahead past the last."""
        words = stat_line.split(b" ")
        if len(words) >= 2 and words[1].isdigit():
            self._ahead_ceiling = int(words[1]) + 1

    def _serve_from_ahead(self, pending: Pending) -> bool:
        """Answer ``pending`` (RETR or TOP) from the message fetched ahead, if it is that one."""
        ahead = self._ahead
        if ahead is None or ahead.number != pending.number or pending.number in self._deleted:
            return False
        self._ahead = None
        self._pending = pending
        # RETR's status line carries the octet count by custom (RFC 1939 §7's example; fetchmail
        # reads it); the TOP we sent had none. _deliver rewrites it for a changed message.
        self._status = b"+OK %d octets" % len(ahead.original) if pending.verb == "RETR" else ahead.status
        self._original, self._wire = ahead.original, ahead.wire
        self._deliver(ahead.delivered)
        return True

    # --- phases ------------------------------------------------------------------------------

    def _on_ahead_status(self) -> bool:
        line = self._server_line(self.limits.max_status_line)
        if line is None:
            if self._server_eof:
                raise PeerError(Side.SERVER, "the server closed the connection during an answer")
            return False
        if line.startswith(b"+OK"):
            self._ahead_status = line
            self.phase = Phase.AHEAD_BODY
        elif line.startswith(b"-ERR"):
            self._ahead_ceiling = self._ahead_number  # no such message: stop reading ahead
            self.phase = Phase.COMMAND
        else:
            raise PeerError(Side.SERVER, "the server answered neither +OK nor -ERR")
        return True

    def _on_ahead_body(self) -> bool:
        try:
            block = self._server.take_block(self.limits.max_message)
        except LineTooLong:
            self.phase = Phase.AHEAD_DROP  # too large to hold: the client's RETR will stream it
            return True
        if block is None:
            if self._server_eof:
                raise PeerError(Side.SERVER, "the server closed the connection in a multi-line answer")
            return False
        self._ahead_original = unstuff(block) if self._server.block_stuffed else block
        self._ahead_wire = block
        self.phase = Phase.AHEAD_SCAN
        self._events.append(ScanMessage(self._ahead_number, self._ahead_original, "TOP"))
        return True

    def _on_ahead_drop(self) -> bool:
        _, finished = self._server.take_stream_chunk()
        if finished:
            self.phase = Phase.COMMAND
            return True
        if self._server_eof:
            raise PeerError(Side.SERVER, "the server closed the connection in a multi-line answer")
        return False

    def _ahead_scanned(self, result: ScanResult) -> None:
        if not result.refusal:  # refused (quarantine failed): the client's RETR tries again
            self._ahead = Ahead(self._ahead_number, self._ahead_status, self._ahead_original,
                                self._ahead_wire, result.message)
        self._ahead_status = self._ahead_original = self._ahead_wire = b""
        self.phase = Phase.COMMAND
