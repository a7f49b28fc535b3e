"""What the parts of the POP3 machine share: its state, and the steps one part calls in another.

``Pop3Proxy`` (pop3.py) is built from mixins (pop3_delivery.py, pop3_readahead.py,
pop3_stls.py). Each mixin is type-checked against this Protocol rather than against
``Pop3Proxy`` itself, so no mixin imports pop3.py, which imports them all: the modules form a
tree, not a circle. At run time the mixins' base is ``object``; the attributes are set in
``Pop3Proxy.__init__``.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from mailguard.protocols.pop3_commands import Pending
from mailguard.protocols.pop3_events import Event, PeerError
from mailguard.protocols.pop3_framing import ReceiveBuffer, StreamGuard
from mailguard.protocols.pop3_states import Phase, Pop3Limits, Pop3Options, State

__all__ = ["Pop3Core"]


class Pop3Core(Protocol):
    options: Pop3Options
    limits: Pop3Limits
    state: State
    phase: Phase
    client_tls: bool
    _client: ReceiveBuffer
    _server: ReceiveBuffer
    _server_eof: bool
    _events: deque[Event]
    _pending: Pending | None
    _status: bytes
    _original: bytes
    _wire: bytes | None
    _server_size: int
    _guard: StreamGuard
    _size_delta: dict[int, int]
    streamed: int
    stream_overrun: bool
    _deleted: set[int]

    # pop3.py
    def _server_line(self, cap: int) -> bytes | None: ...
    def _server_block(self, cap: int) -> bytes | None: ...
    def _emit_client(self, data: bytes) -> None: ...
    def _command_done(self) -> None: ...
    def _fail_peer(self, exc: PeerError) -> None: ...

    # pop3_delivery.py and pop3_readahead.py, each calling the other
    def _deliver(self, message: bytes | None) -> None: ...
    def _retrieved(self, number: int) -> None: ...
