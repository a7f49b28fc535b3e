"""Attachment types blocked by policy (``threatsense.options.blocked-attachment-types``).

Not a detection: a ``.com`` file may hold plain text, and it is blocked all the same, as
Outlook blocks its level-1 types whatever they contain. So these findings carry their own
detector name, ``policy``, and names of their own (``Policy.BlockedAttachment.COM``), and every
output keeps them apart from malware (verdict status ``blocked``, the ``policy`` list of the
JSON results, SARIF rules of kind policy, ``policy="…"`` in ``X-MailGuard-Result``). Turning
heuristics off leaves this on, and an empty list turns this off alone.

Only attachments are judged (``attachments_only``; engine.py gives this detector MIME parts of
the message and of messages attached to it, not archive members or files found inside text),
as Outlook judges the attachments it shows, not the members of a zip: a zip holding
``setup.py`` is no blocked attachment. Names are read as Windows opens them
(``heuristics.windows_name``: trailing dots and spaces dropped, bidirectional controls ignored),
from every name a client could derive.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.heuristics import extension
from mailguard.scan.verdict import POLICY_DETECTOR, Finding

PREFIX = "Policy.BlockedAttachment."


class BlockedTypesDetector:
    name = POLICY_DETECTOR
    attachments_only = True

    def __init__(self, types: Iterable[str]) -> None:
        self.types = frozenset(t.lower().lstrip(".") for t in types if t)

    def scan(self, obj: ScanObject) -> list[Finding]:
        if not obj.names:
            return []
        found = {extension(name) for name in obj.names} & self.types
        return [Finding(PREFIX + ext.upper(), self.name, obj.path) for ext in sorted(found)]

    def close(self) -> None:
        pass
