"""The scan policy: the settings the engine needs, read once into plain fields.

The engine never sees the settings store itself (settings types only: docs/architecture.md#layers),
which keeps it pure and lets tests build a policy in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailguard.settings.schema import DEFAULT_BLOCKED_TYPES

if TYPE_CHECKING:
    from mailguard.settings import Settings

_EC = "web-and-email.email-client."


@dataclass(frozen=True)
class Policy:
    # what gets looked into
    archives: bool = True
    email_files: bool = True
    heuristics: bool = True
    # attachment types blocked by policy, whatever their content (detectors/blocked_types.py)
    blocked_attachment_types: tuple[str, ...] = DEFAULT_BLOCKED_TYPES
    # threatsense.limits.*
    max_object_size: int = 100 * 1024 * 1024
    max_scan_time: float = 60.0
    archive_nesting_level: int = 10
    max_archive_file_size: int = 100 * 1024 * 1024
    # what the client receives
    tag_received: str = "infected"          # never | infected | all
    subject_received: bool = True
    subject_template: str = "[detection %DETECTIONNAME%]"
    action: str = "clean"                   # none | clean | replace
    quarantine: bool = True
    on_scan_error: str = "pass"             # pass | block
    # detectors
    signature_paths: tuple[str, ...] = ()
    yara_rules: tuple[str, ...] = ()
    # True, False, or "auto" until detectors/sources.prepare has looked for clamd
    clamd_enabled: bool | str = False
    clamd_address: str = "unix:/var/run/clamav/clamd.ctl"
    # The signature generation the detectors are built from (detectors/sources.py): a digest of
    # every signature source. Part of equality, so scan workers rebuild their engines when it moves.
    generation: str = ""
    rescan_after_update: bool = True
    signatures_max_age: float = 3 * 86400.0
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Policy":
        g = settings.get
        return cls(
            archives=g(_EC + "threatsense.objects.archives"),
            email_files=g(_EC + "threatsense.objects.email-files"),
            heuristics=g(_EC + "threatsense.options.heuristics"),
            blocked_attachment_types=tuple(dict.fromkeys(
                t.strip().lstrip(".").lower() for t in g(_EC + "threatsense.options.blocked-attachment-types"))),
            max_object_size=g(_EC + "threatsense.limits.max-object-size"),
            max_scan_time=g(_EC + "threatsense.limits.max-scan-time"),
            archive_nesting_level=g(_EC + "threatsense.limits.archive-nesting-level"),
            max_archive_file_size=g(_EC + "threatsense.limits.max-archive-file-size"),
            tag_received=g(_EC + "alerts.tag-received"),
            subject_received=g(_EC + "alerts.subject-received"),
            subject_template=g(_EC + "alerts.subject-template"),
            action=g(_EC + "response.action"),
            quarantine=g(_EC + "response.quarantine"),
            on_scan_error=g(_EC + "response.on-scan-error"),
            signature_paths=tuple(g("detection-engine.signatures.paths")),
            yara_rules=tuple(g("detection-engine.yara.rules")),
            clamd_enabled=g("detection-engine.clamd.enabled"),
            clamd_address=g("detection-engine.clamd.address"),
            rescan_after_update=g("detection-engine.rescan-after-update"),
            signatures_max_age=g("detection-engine.signatures.max-age"),
        )
