"""Steps of the IMAP machine written as generators: what a step can wait for.

An IMAP session is a few exchanges that go on at once: the client's commands, the answers the
server gives, our own commands upstream (a FETCH intercepted, a read-ahead), scans. Each is a
generator (a *flow*) that yields what it waits for: the client's next event (``NEXT_COMMAND``),
the next server response (``NEXT_RESPONSE``, for the flow that holds the server leg), a
condition (``Until``), or the driver's reply to a request (``Ask``). The session's scheduler
(``SessionCore._advance``, core.py) advances them as bytes and replies arrive: deterministic,
with no I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

__all__ = ["NEXT_COMMAND", "NEXT_RESPONSE", "SENT", "START", "Ask", "Flow", "Step", "Until"]


class _Wait:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: the client's next event (``None`` once the client closed)
NEXT_COMMAND = _Wait("NEXT_COMMAND")
#: the next response from the server (``None`` once the server closed); only for the flow
#: that holds the server leg (``ImapProxy.holder``)
NEXT_RESPONSE = _Wait("NEXT_RESPONSE")
#: a flow not run yet (also: no reply to an ``Ask`` yet)
START = _Wait("START")


@dataclass(frozen=True, slots=True)
class Until:
    """Resume when ``test()`` is true."""

    test: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Ask:
    """Emit ``event`` (which has an ``ident``) to the driver; resume with its reply."""

    event: Any


Step = Generator[Any, Any, Any]

#: resume once the driver has taken every event emitted so far (it writes and drains each
#: before asking for the next): a drain point within a long answer
SENT = Until(lambda: True)


class Flow:
    __slots__ = ("gen", "waiting", "reply", "done", "name")

    def __init__(self, gen: Step, name: str) -> None:
        self.gen = gen
        self.waiting: Any = START
        self.reply: Any = START
        self.done = False
        self.name = name

    def __repr__(self) -> str:
        return f"<flow {self.name} waiting {self.waiting!r}>"

