"""What sessions may cost: the ``protocol-filtering.limits.*`` settings, and who is admitted.

A limit reached is never silent: the session is refused or ended with the protocol's own words
where it has them (``-ERR [SYS/TEMP]``, RFC 3206 §4; ``* BYE [UNAVAILABLE]``, RFC 5530 §3), a
log line says which limit, and ``status --json`` counts it (``refused``, ``timed_out``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.settings import Settings

__all__ = ["MESSAGES_IN_FLIGHT", "Admission", "FetchSlot", "SessionLimits", "refusal_line"]

_KEY = "web-and-email.protocol-filtering.limits."


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 1000
    max_sessions_per_client: int = 100
    #: from connect until the client has logged in
    login_timeout: float = 120.0
    #: server silence while an answer is due or half sent
    server_timeout: float = 120.0
    #: bytes read from one peer ahead of the other taking them, per direction
    max_session_buffer: int = 256 * 1024
    #: past this an answer is not passed on at all: the session ends
    max_message_size: int = 1024**3

    @classmethod
    def from_settings(cls, settings: "Settings") -> "SessionLimits":
        g = settings.get
        return cls(
            max_sessions=g(_KEY + "max-sessions"),
            max_sessions_per_client=g(_KEY + "max-sessions-per-client"),
            login_timeout=g(_KEY + "login-timeout"),
            server_timeout=g(_KEY + "server-timeout"),
            max_session_buffer=g(_KEY + "max-session-buffer"),
            max_message_size=g(_KEY + "max-message-size"),
        )


def refusal_line(protocol: str | None, reason: str, *, temporary: bool = True) -> bytes:
    """A refusal in the client's protocol, temporary (POP3 ``[SYS/TEMP]``) or not (``[SYS/PERM]``);
    b"" when it has none we may send."""
    text = reason.encode("utf-8", "replace")
    if protocol in ("pop3", "pop3s"):
        return (b"-ERR [SYS/TEMP] mailguard: " if temporary else b"-ERR [SYS/PERM] mailguard: ") + text + b"\r\n"
    if protocol in ("imap", "imaps"):
        return b"* BYE [UNAVAILABLE] mailguard: " + text + b"\r\n"
    return b""


class Admission:
    """Open sessions, in all and per client address, against ``SessionLimits``."""

    def __init__(self) -> None:
        self.open = 0
        self.per_client: Counter[str] = Counter()
        self._refused_since_log = 0
        self._logged_at = float("-inf")

    def refusal(self, limits: SessionLimits, address: str) -> str | None:
        """Why a new session from ``address`` may not open now, or None."""
        if self.open >= limits.max_sessions:
            return f"too many sessions (limits.max-sessions = {limits.max_sessions}), try again later"
        if self.per_client[address] >= limits.max_sessions_per_client:
            return (f"too many sessions from {address} (limits.max-sessions-per-client = "
                    f"{limits.max_sessions_per_client}), try again later")
        return None

    def enter(self, address: str) -> None:
        self.open += 1
        self.per_client[address] += 1

    def leave(self, address: str) -> None:
        self.open -= 1
        self.per_client[address] -= 1
        if self.per_client[address] <= 0:
            del self.per_client[address]

    def should_log_refusal(self, every: float = 10.0) -> int:
        """How many refusals to report now (0: not yet): a flood of refused connections makes
        one log line per ``every`` seconds, not one each."""
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._logged_at < every:
            return 0
        self._logged_at = now
        count, self._refused_since_log = self._refused_since_log, 0
        return count


#: messages the engine fetches from servers and scans at once, across all sessions. When the
#: scanners fall behind, sessions wait before asking their server for the next message instead of
#: each holding one (or two, with read-ahead) in memory while it waits for a scan: under 1,000
#: busy sessions that queue was most of the engine's memory (bench/load.py). Enough that slow
#: servers far away do not serialise the sessions of a small office.
MESSAGES_IN_FLIGHT = 64


class FetchSlot:
    """One session's place among the engine's ``MESSAGES_IN_FLIGHT``: taken before a message is
    asked of the server, given back once it is scanned (never held while the client reads it,
    so a client that does not read holds no place)."""

    def __init__(self, slots: asyncio.Semaphore | None) -> None:
        self._slots = slots
        self._held = False

    async def take(self) -> None:
        if self._slots is not None and not self._held:
            await self._slots.acquire()
            self._held = True

    def give_back(self) -> None:
        if self._held:
            assert self._slots is not None
            self._held = False
            self._slots.release()
