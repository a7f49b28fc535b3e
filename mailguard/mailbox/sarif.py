"""SARIF 2.1.0 output for ``mailguard scan --format sarif``, so code-scanning dashboards show detections.

One SARIF result per detection (OASIS SARIF 2.1.0 §3.27), with one rule per detection name
(§3.49, referenced by ``ruleId`` and ``ruleIndex``). The location is the file that holds
the message (§3.28 physicalLocation) and, for an mbox, the message's region: byte offset,
byte length and first line (§3.30: a region may give both, consistently); the MIME part or
archive member is a logical location (§3.33). Messages that could not be scanned are
warnings under their own rule; files that could not be read are tool execution
notifications (§3.58), and make ``executionSuccessful`` false.

Attachment types blocked by policy are results too, but of rules whose ``properties.kind`` is
``policy`` (detections say ``detection``), at level ``warning``: no malware was found in them.
What the verdicts were made with is in the log, so a run can be reproduced and compared: the
driver is mailguard at its version (§3.19.2), and each signature source is a tool extension
(§3.18.3) with its version (clamd's) or the SHA-256 of its content (files).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import quote

from mailguard import __version__
from mailguard.mailbox.results import ERROR, MessageResult, Summary

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
VERSION = "2.1.0"
UNSCANNED_RULE = "mailguard.unscanned"
SRCROOT = "SRCROOT"


class SarifBuilder:
    """Collects the results that matter (not the clean ones) and builds the log at the end."""

    def __init__(self, root: str | None = None) -> None:
        self.root = Path(root or os.getcwd()).resolve()
        self.rules: dict[str, dict[str, object]] = {}
        self.results: list[dict[str, object]] = []
        self.notifications: list[dict[str, object]] = []

    def add(self, result: MessageResult) -> None:
        status = result.status
        if status == ERROR:
            self.notifications.append({
                "level": "error",
                "message": {"text": f"{result.where()}: {result.error}"},
                "locations": [self._location(result, "")],
            })
        if result.verdict is None:
            return
        for finding in result.verdict.findings:
            if finding.is_policy:
                self.results.append(self._result(
                    result, finding.name, "warning", finding.part,
                    f"{_describe(result)}, part {finding.part or '(whole message)'}: attachment type blocked by "
                    f"policy ({finding.name}; threatsense.options.blocked-attachment-types)",
                    f"Attachment type blocked by policy whatever its content ({finding.name})", kind="policy"))
                continue
            self.results.append(self._result(
                result, finding.name, "error", finding.part,
                f"{finding.name} found in {_describe(result)}, part {finding.part or '(whole message)'} "
                f"(detector: {finding.detector})",
                f"Malware or unwanted content detected as {finding.name}", detector=finding.detector))
        for missed in result.verdict.incomplete if not result.verdict.findings else ():
            detail = f": {missed.detail}" if missed.detail else ""
            self.results.append(self._result(
                result, UNSCANNED_RULE, "warning", missed.part,
                f"{_describe(result)} could not be fully scanned ({missed.reason.value}{detail})",
                "A message or part could not be scanned (limit, encryption, time-out, engine error)",
                kind="unscanned"))

    def log(self, summary: Summary) -> dict[str, object]:
        detection = summary.detection
        return {
            "$schema": SCHEMA,
            "version": VERSION,
            "runs": [{
                "tool": {"driver": {
                    "name": "mailguard",
                    "version": __version__,
                    "semanticVersion": __version__,
                    "rules": list(self.rules.values()),
                    **({"properties": {"detectionGeneration": detection.get("generation")}} if detection else {}),
                }, **({"extensions": _extensions(detection)} if detection else {})},
                "originalUriBaseIds": {SRCROOT: {"uri": self.root.as_uri() + "/"}},
                "invocations": [{
                    "executionSuccessful": summary.errors == 0 and summary.write_errors == 0,
                    "toolExecutionNotifications": self.notifications,
                }],
                "results": self.results,
                "properties": {"summary": summary.to_json()},
            }],
        }

    def _rule_index(self, rule_id: str, description: str, kind: str, detector: str) -> int:
        if rule_id not in self.rules:
            properties: dict[str, object] = {"kind": kind}
            if detector:
                properties["detector"] = detector
            self.rules[rule_id] = {
                "id": rule_id,
                "name": rule_id,
                "shortDescription": {"text": description},
                "defaultConfiguration": {"level": "error" if kind == "detection" else "warning"},
                "properties": properties,
            }
        return list(self.rules).index(rule_id)

    def _result(self, result: MessageResult, rule_id: str, level: str, part: str, text: str,
                description: str, *, kind: str = "detection", detector: str = "") -> dict[str, object]:
        fingerprint = hashlib.sha256(
            "\0".join([result.file, str(result.location.get("index", "")), result.message_id, rule_id, part])
            .encode("utf-8", "replace")).hexdigest()
        return {
            "ruleId": rule_id,
            "ruleIndex": self._rule_index(rule_id, description, kind, detector),
            "level": level,
            "message": {"text": text},
            "locations": [self._location(result, part)],
            "partialFingerprints": {"mailguard/message-part/v1": fingerprint},
            "properties": {"messageId": result.message_id, "subject": result.subject,
                           "mailbox": result.source, "location": result.location},
        }

    def _location(self, result: MessageResult, part: str) -> dict[str, object]:
        region: dict[str, object] = {"startLine": 1}
        if result.span is not None and "line" in result.location:
            offset, length, _ = result.span
            region = {"startLine": result.location["line"], "byteOffset": offset, "byteLength": length}
        physical: dict[str, object] = {"artifactLocation": self._artifact(result.file)}
        if result.file != "-":
            physical["region"] = region
        where = result.where()
        return {
            "physicalLocation": physical,
            "logicalLocations": [{
                "name": part or "message",
                "fullyQualifiedName": f"{where}/{part}" if part else where,
                "kind": "resource",
            }],
        }

    def _artifact(self, file: str) -> dict[str, object]:
        if file == "-":
            return {"uri": "stdin"}
        path = Path(file).resolve() if os.path.exists(file) else Path(os.path.abspath(file))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return {"uri": path.as_uri()}
        return {"uri": quote(relative.as_posix()), "uriBaseId": SRCROOT}


def _extensions(detection: dict[str, object]) -> list[dict[str, object]]:
    """Each signature source as a SARIF tool extension: its name, and its version (clamd's
    VERSION, mailguard's for the built-in signature) or the SHA-256 of its content."""
    extensions = []
    for source in detection.get("sources") or []:  # type: ignore[union-attr]
        version = str(source.get("version") or "")
        component: dict[str, object] = {"name": f"{source['detector']}:{source['name']}",
                                        "properties": {"detector": source["detector"],
                                                       "signatures": source.get("signatures"),
                                                       "updated": source.get("updated")}}
        if version.startswith("sha256:"):
            component["properties"]["sha256"] = version.removeprefix("sha256:")  # type: ignore[index]
        elif version:
            component["version"] = version
        if source["detector"] != "clamd" and not version.startswith("sha256:"):
            component["semanticVersion"] = version
        extensions.append(component)
    return extensions


def _describe(result: MessageResult) -> str:
    subject = f" (Subject: {result.subject})" if result.subject else ""
    if "index" in result.location:
        return f"message {result.location['index']} of {result.source}{subject}"
    return f"message {result.file}{subject}"
