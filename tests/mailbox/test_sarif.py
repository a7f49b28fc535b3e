from mailguard.mailbox.results import MessageResult, Summary
from mailguard.mailbox.sarif import UNSCANNED_RULE, SarifBuilder
from mailguard.scan.verdict import Finding, Incomplete, Reason, Verdict


def mbox_result(index, verdict, **extra):
    return MessageResult("box", "box", {"format": "mbox", "offset": 100 * index, "index": index, "line": 1 + index},
                         verdict=verdict, span=(100 * index, 100, 5), **extra)


def test_one_result_per_detection_and_one_rule_per_name(tmp_path):
    builder = SarifBuilder(root=str(tmp_path))
    two = Verdict.build([Finding("A", "sig", "2/x.zip/a.exe"), Finding("B", "yara", "3")], [])
    builder.add(mbox_result(0, two))
    builder.add(mbox_result(1, Verdict.build([Finding("A", "sig", "1")], [])))
    builder.add(mbox_result(2, Verdict.build([], [])))
    builder.add(mbox_result(3, Verdict.build([], [Incomplete(Reason.ENCRYPTED, "2/s.zip")])))
    builder.add(MessageResult("gone", "gone", {"format": "unknown"}, error="no such file or folder"))
    log = builder.log(Summary(errors=1))
    run = log["runs"][0]
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == ["A", "B", UNSCANNED_RULE]
    assert [(r["ruleId"], r["ruleIndex"], r["level"]) for r in run["results"]] == [
        ("A", 0, "error"), ("B", 1, "error"), ("A", 0, "error"), (UNSCANNED_RULE, 2, "warning")]
    first = run["results"][0]["locations"][0]
    assert first["physicalLocation"]["region"] == {"startLine": 1, "byteOffset": 0, "byteLength": 100}
    assert first["logicalLocations"][0]["fullyQualifiedName"] == "box#0 (byte 0)/2/x.zip/a.exe"
    fingerprints = {r["partialFingerprints"]["mailguard/message-part/v1"] for r in run["results"]}
    assert len(fingerprints) == 4
    assert run["invocations"][0]["executionSuccessful"] is False
    assert "no such file" in run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]


def test_files_outside_the_root_get_absolute_uris(tmp_path):
    builder = SarifBuilder(root=str(tmp_path / "elsewhere"))
    builder.add(MessageResult("/m/x", "/m/x", {"format": "eml"}, verdict=Verdict.build([Finding("A", "s", "1")], [])))
    uri = builder.log(Summary())["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri == {"uri": "file:///m/x"}
