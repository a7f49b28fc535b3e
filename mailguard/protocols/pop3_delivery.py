"""What the client receives for a RETR or TOP once the scan has spoken, and for a message
too large to hold (RFC 1939 §7; docs/pitfalls.md#pop3-top-is-a-download and
docs/pitfalls.md#pop3-sizes-after-a-rewrite). A mixin of ``Pop3Proxy`` (pop3.py).

A clean message goes out as the very wire bytes the server sent when they are the exact wire
form of what was scanned (pop3_framing.read_message). Otherwise, and for a rewritten message, it
is re-stuffed and its RETR status line carries the delivered octet count; the size change is
remembered for later LIST/STAT answers (pop3_sizes). A TOP gets the first lines of the
*rewritten* message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailguard.protocols.pop3_commands import Pending
from mailguard.protocols.pop3_events import MessageUnscanned
from mailguard.protocols.pop3_framing import CRLF, StreamGuard, cut_top, normalise_line_endings, stuff
from mailguard.protocols.pop3_sizes import OVERSIZE_REFUSAL, UNSCANNED_TAG
from mailguard.protocols.pop3_states import Phase

if TYPE_CHECKING:
    from mailguard.protocols.pop3_core import Pop3Core as _Base
else:
    _Base = object

__all__ = ["MessageDelivery"]

_OCTETS = re.compile(rb"^(\+OK )(\d+)")


class MessageDelivery(_Base):
    def _deliver(self, message: bytes | None) -> None:
        pending = self._pending
        assert pending is not None
        original = self._original
        status = self._status
        if message is None or message == original:
            delivered = original
        else:
            delivered = normalise_line_endings(message)
        if len(delivered) != self._server_size:
            self._size_delta[pending.number] = len(delivered) - self._server_size
        if pending.verb == "TOP":
            data = status + CRLF + stuff(cut_top(delivered, pending.top_lines))
        elif delivered is original and self._wire is not None:
            data = b"".join((status, CRLF, self._wire, b".\r\n"))  # one copy of the message
        else:
            data = _OCTETS.sub(lambda m: m.group(1) + b"%d" % len(delivered), status, count=1)
            data += CRLF + stuff(delivered)
        self._original = self._wire = b""
        self._emit_client(data)
        self._command_done()
        if pending.verb == "RETR":
            self._retrieved(pending.number)

    def _start_oversize(self, pending: Pending) -> None:
        self._guard = StreamGuard()
        self.streamed = 0
        if self.options.on_oversize == "block":
            # Lose nothing (docs/architecture.md#lose-nothing): "-ERR", never a "+OK" notice in its place,
            # so a client that deletes what it downloaded (fetchmail's default) leaves it on the server. The
            # server's answer is drained, not delivered.
            self._emit_client(OVERSIZE_REFUSAL)
            self._events.append(MessageUnscanned(pending.number, "limit", blocked=True))
            self.phase = Phase.STREAM_DROP
            return
        status = _OCTETS.sub(
            lambda m: m.group(1) + b"%d" % (int(m.group(2)) + len(UNSCANNED_TAG)), self._status, count=1
        )
        self._emit_client(status + CRLF + UNSCANNED_TAG)
        self._events.append(MessageUnscanned(pending.number, "limit", blocked=False))
        self.phase = Phase.STREAM_PASS
