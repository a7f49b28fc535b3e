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
- Only after a RETR that continues a run: of message 1, or of the message after the one the
  client retrieved last. A client that opens messages here and there (a user reading, a client
  fetching only the new ones of a sparse list) would have every message after the one it opens
  fetched and scanned for nothing, and its next command wait behind that fetch (bench/live.py
  counted 17,049 scans for 12,546 fetches); such a client gets read-ahead again from its
  second RETR in a row.
- Only in TRANSACTION, for a message neither deleted in this session nor past the
  count the server gave (STAT) or past one it refused; up to ``options.read_ahead`` messages
  (``READ_AHEAD_DEPTH`` in the engine) past the last one retrieved, the next fetch starting as
  soon as the previous one is scanned (so the server, the scan and the client work at once).
- Only messages of ``READ_AHEAD_MAX_MESSAGE`` octets or less, by the size the server gave in a
  LIST answer (the client's, or a ``LIST`` of our own, once, when the client asked for none): a large
  message gains little from it, and would hold its size in memory twice. Memory per session is
  then the message being delivered plus ``options.read_ahead`` small ones.
- A message fetched ahead must have the size LIST gave (RFC 1939 §5: "the exact size of the
  message in octets"; plus the CRLF a message without a final line end gets), else it is dropped and read-ahead stops for the session: a server
  whose TOP is not the whole message (a capped line count, say) would otherwise have a part of a
  message served as RETR's answer, which a delete-after-download client takes for the message.
- The scan of a message fetched ahead is a real scan: counted, logged and, when infected,
  quarantined, even if the client never asks for it (at most ``options.read_ahead`` per session).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailguard.protocols.pop3_commands import TOP_WHOLE_MESSAGE, Pending, message_number
from mailguard.protocols.pop3_events import PeerError, ScanMessage, ScanResult, SendToServer, Side
from mailguard.protocols.pop3_framing import LineTooLong, read_message
from mailguard.protocols.pop3_listing import read_listing
from mailguard.protocols.pop3_states import Phase, State

if TYPE_CHECKING:
    from mailguard.protocols.pop3_core import Pop3Core as _Base
else:
    _Base = object

__all__ = ["READ_AHEAD_DEPTH", "READ_AHEAD_MAX_MESSAGE", "Ahead", "ReadAhead"]

#: messages the engine fetches past the last one the client retrieved (Pop3Options.read_ahead):
#: two keep the server fetching one while the other is scanned
READ_AHEAD_DEPTH = 2
#: the largest message fetched ahead (its LIST size); larger ones are fetched when asked for
READ_AHEAD_MAX_MESSAGE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Ahead:
    """A message fetched ahead and scanned, waiting for the client to ask for it."""

    status: bytes          # the server's status line for the TOP that fetched it
    original: bytes        # de-stuffed
    wire: bytes            # as received (still stuffed)
    delivered: bytes | None  # the scan's rewrite; None: the original as it is


class ReadAhead(_Base):
    def _init_read_ahead(self) -> None:
        #: messages fetched ahead and scanned, by number, oldest first
        self._ahead: dict[int, Ahead] = {}
        #: the last message the client retrieved with RETR: read-ahead runs from there
        self._ahead_from = 0
        #: that RETR continued a run (of 1, or of the message after the one before it)
        self._in_a_run = False
        self._ahead_number = 0
        self._ahead_status = b""
        self._ahead_original = b""
        self._ahead_wire = b""
        #: No read-ahead at or past this number (the server's count, or a message it refused).
        self._ahead_ceiling: int | None = None
        #: message sizes the server gave in LIST answers, by number
        self._list_sizes: dict[int, int] = {}
        #: a whole LIST answer was seen (the client's or ours): every message's size is known
        self._listed = False
        #: RETR/TOP answers served from read-ahead (the engine's ``read_ahead`` counter)
        self.served_ahead = 0

    def _maybe_read_ahead(self) -> None:
        """Fetch the next message not held yet, when that can be useful."""
        number = self._ahead_from + 1
        while number in self._ahead:
            number += 1
        if (
            not self._in_a_run
            or self.state is not State.TRANSACTION
            or self.phase is not Phase.COMMAND
            or len(self._client)  # the client's next command is here already: serve it first
            or number > self._ahead_from + self.options.read_ahead
            or number in self._deleted
            or (self._ahead_ceiling is not None and number >= self._ahead_ceiling)
        ):
            return
        self._ahead_number = number
        size = self._list_sizes.get(number)
        if size is None and not self._listed:
            # One LIST for the session, not one per message: a round trip per message would
            # let the client's next RETR overtake every read-ahead.
            self._events.append(SendToServer(b"LIST\r\n"))
            self.phase = Phase.AHEAD_SIZE
        elif size is None:
            self._ahead_ceiling = number  # not in the server's listing: no such message
        elif size <= READ_AHEAD_MAX_MESSAGE:
            self._events.append(SendToServer(b"TOP %d %d\r\n" % (number, TOP_WHOLE_MESSAGE)))
            self.phase = Phase.AHEAD_STATUS

    def _retrieved(self, number: int) -> None:
        """The client retrieved ``number``: what is held behind it is not needed any more."""
        self._in_a_run = number in (1, self._ahead_from + 1)
        self._ahead_from = number
        for held in [n for n in self._ahead if n <= number]:
            del self._ahead[held]
        self._maybe_read_ahead()

    def drop_read_ahead(self) -> None:
        """Forget the messages fetched ahead (the driver's settings changed since they were
        scanned); the client's RETR of one then goes upstream and is scanned under the new ones."""
        self._ahead.clear()

    def _note_sizes(self, listing: bytes) -> None:
        """Sizes from a LIST answer: ``+OK n size`` or the lines of a scan listing."""
        for line in listing.split(b"\r\n"):
            words = line.removeprefix(b"+OK ").split(b" ")
            if len(words) >= 2 and (number := message_number(words[0])) is not None and words[1].isdigit():
                self._list_sizes[number] = int(words[1])

    def _note_message_count(self, stat_line: bytes) -> None:
        """STAT said how many messages there are: never read ahead past the last."""
        words = stat_line.split(b" ")
        if len(words) >= 2 and words[1].isdigit():
            self._ahead_ceiling = int(words[1]) + 1

    def _serve_from_ahead(self, pending: Pending) -> bool:
        """Answer ``pending`` (RETR or TOP) from the message fetched ahead, if it is that one."""
        ahead = self._ahead.get(pending.number)
        if ahead is None or pending.number in self._deleted:
            return False
        del self._ahead[pending.number]
        self.served_ahead += 1
        self._pending = pending
        # RETR's status line carries the octet count by custom (RFC 1939 §7's example; fetchmail
        # reads it), the size LIST gave; the TOP we sent had none. _deliver rewrites it for a
        # changed message.
        size = self._list_sizes.get(pending.number, len(ahead.original))
        self._status = b"+OK %d octets" % size if pending.verb == "RETR" else ahead.status
        self._original, self._wire, self._server_size = ahead.original, ahead.wire, len(ahead.original)
        self._deliver(ahead.delivered)
        return True

    # --- phases ------------------------------------------------------------------------------

    def _our_answer(self) -> bytes | None:
        """The status line answering our own command (+OK or -ERR); None until it is whole."""
        line = self._server_line(self.limits.max_status_line)
        if line is None:
            if self._server_eof:
                raise PeerError(Side.SERVER, "the server closed the connection during an answer")
            return None
        if not line.startswith((b"+OK", b"-ERR")):
            raise PeerError(Side.SERVER, "the server answered neither +OK nor -ERR")
        return line

    def _on_ahead_size(self) -> bool:
        line = self._our_answer()
        if line is None:
            return False
        if line.startswith(b"+OK"):
            self.phase = Phase.AHEAD_LISTING
        else:
            self._ahead_ceiling = 0  # no listing, no sizes: no read-ahead in this session
            self.phase = Phase.COMMAND
        return True

    def _on_ahead_listing(self) -> bool:
        try:
            block = self._server_block(self.limits.max_listing)
        except LineTooLong as exc:
            raise PeerError(Side.SERVER, str(exc)) from exc
        if block is None:
            return False
        self._note_sizes(read_listing("LIST", block)[0])
        self._listed = True
        self.phase = Phase.COMMAND
        self._maybe_read_ahead()  # now with the sizes
        return True

    def _on_ahead_status(self) -> bool:
        line = self._our_answer()
        if line is None:
            return False
        if line.startswith(b"+OK"):
            self._ahead_status = line
            self.phase = Phase.AHEAD_BODY
        else:
            self._ahead_ceiling = self._ahead_number  # no such message: stop reading ahead
            self.phase = Phase.COMMAND
        return True

    def _on_ahead_body(self) -> bool:
        try:
            block = self._server_block(min(self.limits.max_message, READ_AHEAD_MAX_MESSAGE + 64 * 1024))
        except LineTooLong:
            self.streamed = 0
            self.phase = Phase.AHEAD_DROP  # longer than LIST said: the client's RETR fetches it
            return True
        if block is None:
            return False
        original, canonical = read_message(block, self._server.block_stuffed)
        if not canonical or not _whole(original, self._list_sizes.get(self._ahead_number)):
            # Not the whole message as RETR would give it (a server whose TOP caps the line count,
            # or whose sizes are counted otherwise): never served in place of RETR, where a
            # delete-after-download client would take it as the message. No read-ahead from here.
            # Nor one that must be re-encoded (read_message): its size cannot be told from LIST's.
            self._ahead_ceiling = 0
            self.phase = Phase.COMMAND
            return True
        self._ahead_original, self._ahead_wire = original, block
        self.phase = Phase.AHEAD_SCAN
        self._events.append(ScanMessage(self._ahead_number, original, "TOP"))
        return True

    def _on_ahead_drop(self) -> bool:
        chunk, finished = self._server.take_stream_chunk()
        self.streamed += len(chunk)
        if self.streamed > self.limits.max_stream and not finished:
            self.stream_overrun = True
            raise PeerError(Side.SERVER, f"the server's answer passed {self.limits.max_stream} bytes")
        if finished:
            self.phase = Phase.COMMAND
            return True
        if self._server_eof:
            raise PeerError(Side.SERVER, "the server closed the connection in a multi-line answer")
        return False

    def _ahead_scanned(self, result: ScanResult) -> None:
        self.phase = Phase.COMMAND
        original, wire, self._ahead_original, self._ahead_wire = self._ahead_original, self._ahead_wire, b"", b""
        if result.refusal:
            # The original could not be quarantined: not kept, and no fetching it again until
            # the client moves on (the client's own RETR tries again, and is refused if it fails).
            return
        self._ahead[self._ahead_number] = Ahead(self._ahead_status, original, wire, result.message)
        self._maybe_read_ahead()


def _whole(message: bytes, listed: int | None) -> bool:
    """Whether ``message`` is the whole message LIST sized at ``listed`` octets. A message that
    does not end with a line end gets one on the wire (RFC 1939 §3; Dovecot does so), two more
    octets than LIST counts."""
    if listed is None:
        return False
    return len(message) == listed or (len(message) == listed + 2 and message.endswith(b"\r\n"))
