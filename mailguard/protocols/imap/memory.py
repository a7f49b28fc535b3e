"""What a session holds: the messages it served lately, by (mailbox, UIDVALIDITY, UID).

A message is scanned once per session (Thunderbird's chunk loop re-asks the same message dozens of
times, docs/pitfalls.md#scan-before-release); a FETCH of a message held here, whose number and UID
the server told us (view.py), is answered without asking the server anything (served.py).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["ENGINE_MEMORY_BYTES", "SESSION_MEMORY_BYTES", "MemoryKey", "SessionMemory"]

#: messages a session keeps in memory after serving them (Thunderbird's chunk loop re-asks)
SESSION_MEMORY_BYTES = 64 * 1024 * 1024
#: what every session of the engine keeps in all, shared out equally among the open ones: one
#: session may keep SESSION_MEMORY_BYTES, a thousand may not keep that much each (they kept
#: 64 GB between them before; issue 12). Past its share a session keeps nothing more: a message
#: asked for again is fetched again (a rewritten one comes from the rewrite cache, a clean one
#: is checked against its recorded hash, neither is scanned again).
ENGINE_MEMORY_BYTES = 64 * 1024 * 1024
MemoryKey = tuple[bytes | None, int | None, int]


class SessionMemory:
    """What this session served lately: a chunk loop costs one scan.

    Each entry is (served bytes, unchanged, the server's RFC822.SIZE when it told us): with the
    size a FETCH of UID, RFC822.SIZE and body items is answered without asking the server."""

    #: the memories not closed yet: the engine's open IMAP sessions (one engine per process);
    #: weak, so a session dropped without closing gives its share back too
    live: "weakref.WeakSet[SessionMemory]" = weakref.WeakSet()

    def __init__(self, max_bytes: int = SESSION_MEMORY_BYTES,
                 generation: Callable[[], str | None] = lambda: None) -> None:
        self.cap = max_bytes
        self._items: OrderedDict[MemoryKey, tuple[bytes, bool, int | None]] = OrderedDict()
        self._bytes = 0
        # After a signature update what a session holds is forgotten, so a message fetched
        # again is judged by the rewrite cache's rules for rescans (proxy/imap_cache.py).
        self._generation = generation
        self._held_for = generation()
        SessionMemory.live.add(self)

    @property
    def max_bytes(self) -> int:
        """This session's cap: its own, or its share of ENGINE_MEMORY_BYTES if smaller."""
        return min(self.cap, ENGINE_MEMORY_BYTES // max(1, len(SessionMemory.live)))

    def close(self) -> None:
        """The session is over: forget everything, and give up its share."""
        self.clear()
        SessionMemory.live.discard(self)

    def _current(self) -> None:
        now = self._generation()
        if now != self._held_for:
            self.clear()
            self._held_for = now

    def get(self, key: MemoryKey) -> tuple[bytes, bool, int | None] | None:
        self._current()
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __contains__(self, key: MemoryKey) -> bool:
        self._current()
        return key in self._items

    def put(self, key: MemoryKey, served: bytes, unchanged: bool, server_size: int | None = None) -> None:
        if len(served) > self.max_bytes:
            return
        found = self._items.get(key)
        if found is not None:
            if found[2] is None and server_size is not None:
                self._items[key] = (found[0], found[1], server_size)
            return
        self._items[key] = (served, unchanged, server_size)
        self._bytes += len(served)
        cap = self.max_bytes
        while self._bytes > cap:
            _, (dropped, _, _) = self._items.popitem(last=False)
            self._bytes -= len(dropped)
