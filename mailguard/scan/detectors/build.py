"""The one place that decides which detectors run for a policy.

Order is fixed (cheap built-ins first), which keeps verdicts deterministic; the verdict
sorts its findings anyway. Loading is eager: a bad signature file or a missing optional
package is a ScanError when the engine starts, not a surprise on the first message.
"""

from __future__ import annotations

from mailguard.scan.detectors.base import Detector
from mailguard.scan.policy import Policy

__all__ = ["build_detectors"]


def build_detectors(policy: Policy) -> list[Detector]:
    from mailguard.scan.detectors.eicar import EicarDetector

    detectors: list[Detector] = [EicarDetector()]
    if policy.signature_paths:
        from mailguard.scan.detectors.clamav_db import ClamavDbDetector

        detectors.append(ClamavDbDetector.from_paths(policy.signature_paths, timeout=policy.max_scan_time))
    if policy.yara_rules:
        from mailguard.scan.detectors.yara_rules import YaraDetector

        detectors.append(YaraDetector.from_paths(policy.yara_rules, policy.max_scan_time))
    if policy.heuristics:
        from mailguard.scan.detectors.heuristics import HeuristicsDetector

        detectors.append(HeuristicsDetector())
    if policy.blocked_attachment_types:
        from mailguard.scan.detectors.blocked_types import BlockedTypesDetector

        detectors.append(BlockedTypesDetector(policy.blocked_attachment_types))
    address = policy.clamd_address
    if policy.clamd_enabled == "auto":
        # Not resolved by sources.prepare (which the engine and `mailguard scan` call once for all
        # their workers): look now.
        from mailguard.scan.detectors.clamd import locate

        located = locate(address)
        address = located[0] if located is not None else ""
    if policy.clamd_enabled is True or (policy.clamd_enabled == "auto" and address):
        from mailguard.scan.detectors.clamd import ClamdDetector

        detectors.append(ClamdDetector(address, policy.max_scan_time))
    return detectors
