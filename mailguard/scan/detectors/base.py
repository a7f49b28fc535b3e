"""The one small interface every detector implements.

The MIME walk and the archive readers turn a message into ``ScanObject``s (a decoded
part, an archive member, the raw message itself); each detector looks at each object
and returns findings. A detector that cannot do its job (clamd down, a time-out)
raises ``DetectorFailed``; the engine records the object as unscanned, never clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailguard.scan.verdict import Finding


@dataclass(frozen=True, init=False)
class ScanObject:
    data: bytes
    # Where it sits: MIME part numbers and member names joined by "/", e.g. "2/invoice.zip/payload.exe".
    # The raw message itself has path "" and is_message_root=True.
    path: str
    # Every file name a client could derive for it (Content-Type name, Content-Disposition filename,
    # RFC 2231 / RFC 2047 decodings, archive member name); empty when it has none.
    names: tuple[str, ...] = ()
    declared_type: str = ""          # e.g. "application/pdf"; "" when none was declared
    is_message_root: bool = False    # the whole raw message (detectors such as clamd want it too)
    # How many containers (archives, attached messages) enclose it: the root and its MIME parts are 0,
    # members of an attached zip are 1. ``containers.expand`` checks it against archive-nesting-level.
    depth: int = 0

    def __init__(self, data: bytes, path: str, names: tuple[str, ...] = (), declared_type: str = "",
                 is_message_root: bool = False, depth: int = 0) -> None:
        # Several objects are made per message, and a frozen dataclass's own __init__ sets each
        # field through object.__setattr__: writing the instance dict directly does the same in
        # half the time. (tests/scan/test_engine.py checks that every field is set here.)
        fields = self.__dict__
        fields["data"] = data
        fields["path"] = path
        fields["names"] = names
        fields["declared_type"] = declared_type
        fields["is_message_root"] = is_message_root
        fields["depth"] = depth


class DetectorFailed(Exception):
    """The detector could not give an answer for this object."""


class Detector(Protocol):
    name: str

    def scan(self, obj: ScanObject) -> list[Finding]:
        """Findings for this object only (containers are expanded by the engine, not here)."""
        ...

    def close(self) -> None:
        """Release sockets or handles; the engine calls it once when done."""
        ...
