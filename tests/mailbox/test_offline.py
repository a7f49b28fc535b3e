import io
import os

import pytest

from mailguard.errors import UsageError
from mailguard.mailbox import offline
from mailguard.mailbox.mbox import read_mbox
from mailguard.mailbox.offline import OfflineScan
from mailguard.scan.policy import Policy
from tests.mailbox.fixtures import EICAR, UNSCANNABLE, EicarEngine, make_maildir, mbox_bytes, message


def scan(paths, *, jobs=1, action="report", keep=None, stdin=None, policy=None):
    with OfflineScan([str(p) for p in paths], policy or Policy(), jobs=jobs, action=action, keep=keep,
                     engine_factory=EicarEngine, stdin=stdin) as run:
        results = list(run.results())
    return results, run.summary


@pytest.fixture
def mixed(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "CHUNK_SIZE", 1000)  # many ranges per mbox
    monkeypatch.setattr(offline, "MIN_CHUNK_SIZE", 1000)
    messages = [message(i, EICAR + b"\n" if i % 7 == 3 else b"body\n") for i in range(60)]
    (tmp_path / "a.mbox").write_bytes(mbox_bytes(messages))
    make_maildir(tmp_path / "b-maildir", {f"cur/{i}:2,S": message(100 + i) for i in range(40)}
                 | {"new/bad": b"\0\1garbage"})
    (tmp_path / "c.eml").write_bytes(message(200, UNSCANNABLE + b"\n"))
    return tmp_path, messages


def test_results_are_the_same_and_in_input_order_for_any_jobs(mixed):
    folder, messages = mixed
    one, summary_one = scan([folder], jobs=1)
    two, summary_two = scan([folder], jobs=2)
    assert [r.to_json() for r in one] == [r.to_json() for r in two]
    mbox_results = [r for r in one if r.location["format"] == "mbox"]
    assert [r.location["index"] for r in mbox_results] == list(range(60))
    assert [r.message_id for r in mbox_results] == [f"<{i}@example.org>" for i in range(60)]
    assert summary_one.to_json() | {"seconds": 0} == summary_two.to_json() | {"seconds": 0}
    assert (summary_one.infected, summary_one.unscanned, summary_one.errors) == (9, 1, 1)
    assert summary_one.messages == 60 + 41 + 1


def test_mbox_locations_point_at_the_message(mixed):
    folder, _ = mixed
    data = (folder / "a.mbox").read_bytes()
    results, _ = scan([folder / "a.mbox"], jobs=2)
    for result in results:
        offset = result.location["offset"]
        assert data[offset:].startswith(b"From ")
        assert data[:offset].count(b"\n") + 1 == result.location["line"]
        assert result.size <= result.span[1]


def test_a_bad_input_does_not_stop_the_scan(tmp_path):
    (tmp_path / "good.eml").write_bytes(message(1, EICAR))
    results, summary = scan([tmp_path / "missing", tmp_path / "good.eml"])
    assert [r.status for r in results] == ["error", "infected"]
    assert results[0].error == "no such file or folder"


def test_truncated_mbox_is_an_error_but_still_scanned(tmp_path):
    path = tmp_path / "cut.mbox"
    path.write_bytes(mbox_bytes([message(1), message(2, EICAR + b" and then the di")])[:-3])
    results, _ = scan([path])
    assert results[0].status == "clean"
    assert results[1].status == "error" and "truncated" in results[1].error
    assert [f.name for f in results[1].verdict.findings] == ["Eicar-Test-Signature"]


def test_messages_larger_than_the_object_limit_are_unscanned(tmp_path):
    path = tmp_path / "big.mbox"
    path.write_bytes(mbox_bytes([message(1, b"x" * 300_000 + b"\n"), message(2)]))
    results, _ = scan([path], policy=Policy(max_object_size=100_000))
    assert [r.status for r in results] == ["unscanned", "clean"]
    assert results[0].verdict.incomplete[0].reason.value == "limit"
    assert results[0].subject == "message 1"


def test_stdin_holding_an_mbox_or_one_message(tmp_path):
    data = mbox_bytes([message(1), message(2, EICAR)])
    results, _ = scan(["-"], stdin=io.BytesIO(data), jobs=2)
    assert [(r.source, r.status, r.location["index"]) for r in results] == [("-", "clean", 0), ("-", "infected", 1)]
    results, _ = scan(["-"], stdin=io.BytesIO(message(3, EICAR)))
    assert [(r.status, r.location) for r in results] == [("infected", {"format": "eml"})]
    results, _ = scan(["-"], stdin=io.BytesIO(b"\0\0garbage"))
    assert results[0].status == "error"


def test_stdin_cannot_be_rewritten():
    with pytest.raises(UsageError):
        OfflineScan(["-"], Policy(), action="clean")


def test_clean_splices_the_mbox_and_keeps_originals_first(tmp_path):
    messages = [message(1), message(2, b"From the top\n" + EICAR + b"\n"), message(3)]
    path = tmp_path / "box"
    original = mbox_bytes(messages)
    path.write_bytes(original)
    os.chmod(path, 0o640)
    kept = []

    def keep(raw, result):
        kept.append((raw, path.read_bytes()))  # what the mailbox looked like at that moment
        return "Q1"

    results, summary = scan([path], action="clean", keep=keep, jobs=2)
    assert summary.changed == 1 and results[1].changed and results[1].quarantine_id == "Q1"
    assert kept == [(messages[1], original)]  # kept before the mailbox changed
    rewritten = list(read_mbox(io.BytesIO(path.read_bytes()), max_size=1 << 20))
    assert [m.content for m in rewritten] == [
        messages[0], b"X-MailGuard-Result: infected\n" + messages[1].replace(EICAR, b"[removed]"), messages[2]]
    spans = [m.offset for m in read_mbox(io.BytesIO(original), max_size=1 << 20)]
    assert path.read_bytes()[:spans[1]] == original[:spans[1]]  # untouched bytes are the same bytes
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert not os.path.exists(str(path) + ".lock")
    assert sorted(os.listdir(tmp_path)) == ["box"]


def test_clean_leaves_a_clean_mbox_untouched(tmp_path):
    path = tmp_path / "box"
    path.write_bytes(mbox_bytes([message(1)]))
    before = os.stat(path)
    results, summary = scan([path], action="clean")
    assert summary.changed == 0
    assert os.stat(path).st_ino == before.st_ino


def test_clean_rewrites_maildir_files_under_their_names(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1, EICAR), "cur/2:2,": message(2)})
    results, summary = scan([root], action="clean", keep=lambda raw, result: "Q")
    assert summary.changed == 1
    assert (root / "cur" / "1:2,S").read_bytes().startswith(b"X-MailGuard-Result: infected\n")
    assert (root / "cur" / "2:2,").read_bytes() == message(2)
    assert os.listdir(root / "tmp") == []


@pytest.mark.parametrize("name", ["1:2,S", "1,S=999,W=999:2,S"], ids=["same-name", "size-fields"])
def test_a_maildir_file_a_client_renames_during_the_rewrite_is_cleaned_under_its_new_name(tmp_path, name):
    """A flag change renames a Maildir file at any time: between our read and our swap, say.
    The message is followed to its new name and cleaned there: no second copy under the old name."""
    root = make_maildir(tmp_path / "md", {f"cur/{name}": message(1, EICAR)})
    flagged = name.replace(":2,S", ":2,RS")

    def client_renames(raw, result):  # called after the file was read and checked, before the swap
        os.rename(root / "cur" / name, root / "cur" / flagged)
        return "Q"

    results, summary = scan([root], action="clean", keep=client_renames)
    (now,) = os.listdir(root / "cur")
    assert now.endswith(":2,RS") and now.split(",S=")[0] == flagged.split(",S=")[0]  # size fields corrected
    assert EICAR not in (root / "cur" / now).read_bytes()
    assert results[0].changed and results[0].file == str(root / "cur" / now) and not results[0].write_error
    assert os.listdir(root / "tmp") == []


def test_a_maildir_file_a_client_deletes_during_the_rewrite_is_not_recreated(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1, EICAR)})

    def client_deletes(raw, result):
        os.unlink(root / "cur" / "1:2,S")
        return "Q"

    results, summary = scan([root], action="clean", keep=client_deletes)
    assert os.listdir(root / "cur") == [] and os.listdir(root / "tmp") == []
    assert not results[0].changed and "by another program" in results[0].write_error


def test_maildir_files_renamed_or_deleted_after_listing_are_followed_or_skipped(tmp_path, monkeypatch):
    """Between the folder listing and the read, a client flags one message and expunges another."""
    root = make_maildir(tmp_path / "md", {"new/1": message(1, EICAR), "cur/2:2,S": message(2)})
    listed = os.listdir

    def listing_then_client(path):
        names = listed(path)
        if str(path).endswith("new") and (root / "new" / "1").exists():
            os.rename(root / "new" / "1", root / "cur" / "1:2,S")  # seen by the client: new/ to cur/
            os.unlink(root / "cur" / "2:2,S")                     # and the other one expunged
        return names

    monkeypatch.setattr(os, "listdir", listing_then_client)
    results, summary = scan([root], jobs=1)
    assert [(r.location["file"], r.status) for r in results] == [("cur/1:2,S", "infected")]
    assert summary.skipped == 1 and summary.errors == 0


def test_a_message_file_replaced_during_the_rewrite_is_put_back(tmp_path):
    path = tmp_path / "one.eml"
    path.write_bytes(message(1, EICAR))

    def someone_replaces(raw, result):
        replacement = tmp_path / "replacement"
        replacement.write_bytes(message(2, EICAR) + b"more")
        os.rename(replacement, path)
        return "Q"

    results, summary = scan([path], action="clean", keep=someone_replaces)
    assert path.read_bytes() == message(2, EICAR) + b"more"  # theirs, not our rewrite of the old one
    assert not results[0].changed and "changed on disk while it was rewritten" in results[0].write_error
    assert sorted(os.listdir(tmp_path)) == ["one.eml"]


def test_a_quarantine_failure_leaves_the_mailbox_as_it_was(tmp_path):
    path = tmp_path / "box"
    data = mbox_bytes([message(1, EICAR)])
    path.write_bytes(data)

    def broken_keep(raw, result):
        raise OSError("quarantine disk full")

    results, summary = scan([path], action="clean", keep=broken_keep)
    assert path.read_bytes() == data
    assert summary.write_errors == 1 and "quarantine disk full" in results[0].write_error
    assert sorted(os.listdir(tmp_path)) == ["box"]


class _DyingEngine(EicarEngine):
    def scan(self, raw):
        if b"DIE NOW" in raw:
            os._exit(9)  # a worker killed mid-scan (out of memory, a signal)
        return super().scan(raw)


class _BrokenEngine(EicarEngine):
    def __init__(self, policy=None):
        raise RuntimeError("no engine today")


def test_a_worker_dying_mid_scan_is_a_scan_error(tmp_path):
    from mailguard.errors import ScanError

    for i in range(4):
        (tmp_path / f"{i}.eml").write_bytes(message(i, b"DIE NOW\n" if i == 2 else b"body\n"))
    with pytest.raises(ScanError, match="died"):
        with OfflineScan([str(tmp_path)], Policy(), jobs=2, engine_factory=_DyingEngine) as run:
            list(run.results())


def test_an_engine_that_cannot_be_built_is_a_scan_error_before_any_worker(tmp_path):
    from mailguard.errors import ScanError

    (tmp_path / "1.eml").write_bytes(message(1))
    for jobs in (1, 2):
        with pytest.raises(ScanError, match="no engine today"):
            with OfflineScan([str(tmp_path)], Policy(), jobs=jobs, engine_factory=_BrokenEngine):
                pass


def test_messages_too_large_to_scan_are_tagged_by_their_header_alone(tmp_path):
    from dataclasses import replace as changed

    big = message(1, b"x" * 5000 + b"\n")
    (tmp_path / "box").write_bytes(mbox_bytes([message(0), big]))
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": big})
    (tmp_path / "big.eml").write_bytes(big)
    huge_header = b"X-Long: a\n" + (b" " + b"y" * 70 + b"\n") * 1000 + big
    (tmp_path / "huge-header.mbox").write_bytes(mbox_bytes([huge_header]))
    policy = changed(Policy(), max_object_size=1000)
    results, summary = scan([tmp_path / "box", root, tmp_path / "big.eml", tmp_path / "huge-header.mbox"],
                            action="tag", policy=policy)
    assert [r.status for r in results] == ["clean", "unscanned", "unscanned", "unscanned", "unscanned"]
    assert [r.changed for r in results] == [False, True, True, True, False]
    assert results[-1].write_error == "too large to rewrite: left unchanged"
    assert (tmp_path / "huge-header.mbox").read_bytes() == mbox_bytes([huge_header])
    tagged = b'X-MailGuard-Result: unscanned; reason="limit"\n'
    header_end = big.index(b"\n\n") + 1
    expected = big[:header_end] + tagged + big[header_end:]
    assert [m.content for m in read_mbox(io.BytesIO((tmp_path / "box").read_bytes()), max_size=1 << 20)] == [
        message(0), expected]
    assert (root / "cur" / "1:2,S").read_bytes() == expected
    assert (tmp_path / "big.eml").read_bytes() == expected
    assert summary.write_errors == 1


def test_with_on_scan_error_block_clean_replaces_a_message_too_large_to_scan(tmp_path):
    from dataclasses import replace as changed

    big = message(1, b"x" * 5000 + b"\n")
    (tmp_path / "box").write_bytes(mbox_bytes([big, message(2)]))
    (tmp_path / "big.eml").write_bytes(big)
    kept = []
    policy = changed(Policy(), max_object_size=1000, on_scan_error="block")
    results, _ = scan([tmp_path / "box", tmp_path / "big.eml"], action="clean", policy=policy,
                      keep=lambda raw, r: kept.append(raw) or "Q")
    assert [(r.status, r.changed, r.quarantine_id) for r in results] == [
        ("unscanned", True, "Q"), ("clean", False, ""), ("unscanned", True, "Q")]
    assert kept == [big, big]
    first, second = read_mbox(io.BytesIO((tmp_path / "box").read_bytes()), max_size=1 << 20)
    for now in (first.content, (tmp_path / "big.eml").read_bytes()):
        assert b"x" * 100 not in now and b"withheld" in now and b"X-MailGuard-Result: unscanned" in now
        assert b"Subject: message 1" in now
    assert second.content == message(2)


def test_rows_of_an_mbox_after_a_failed_range_become_errors(mixed, monkeypatch):
    from mailguard.mailbox import worker

    folder, messages = mixed
    real = worker.read_mbox
    starts = []

    def failing(stream, *, start=0, **kwargs):
        starts.append(start)
        if len(starts) == 2:  # the second range of the mbox fails; the later ones still return rows
            raise OSError("disk on fire")
        return real(stream, start=start, **kwargs)

    monkeypatch.setattr(worker, "read_mbox", failing)
    results, summary = scan([folder / "a.mbox"])
    assert len(starts) > 3
    stopped = [r for r in results if "mbox reading stopped: disk on fire" in r.error]
    assert len(stopped) == 1
    later = results[results.index(stopped[0]) + 1:]
    assert later and all(r.status == "error" and "disk on fire" in r.error for r in later)
    assert summary.errors == 1 + len(later)


def test_after_a_failed_rewrite_the_rest_of_the_mbox_says_it_was_not_rewritten(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(mbox_bytes([message(i, EICAR + b"\n") for i in range(3)]))
    before = box.read_bytes()
    calls = []

    def keep(raw, result):
        calls.append(raw)
        if len(calls) == 2:
            raise OSError("quarantine full")
        return "Q"

    results, summary = scan([box], action="clean", keep=keep)
    assert [r.write_error for r in results[1:]] == ["not rewritten: quarantine full",
                                                    "not rewritten: mailbox left unchanged"]
    assert box.read_bytes() == before
    # The first message was rewritten into the new file, which was then abandoned: its result
    # says so (it was held until the mbox closed), and its original is in the quarantine.
    assert not results[0].changed and results[0].write_error == "not rewritten: mailbox left unchanged"
    assert results[0].quarantine_id == "Q"
    assert summary.write_errors == 3 and summary.changed == 0


def test_a_failed_commit_leaves_no_result_saying_it_changed_its_message(tmp_path, monkeypatch):
    from mailguard.mailbox.rewrite import MboxRewriter

    box = tmp_path / "box"
    box.write_bytes(mbox_bytes([message(0, b"clean\n"), message(1, EICAR + b"\n"), message(2, b"clean\n")]))
    before = box.read_bytes()

    def full(self):  # type: ignore[no-untyped-def]
        self.abort()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MboxRewriter, "finish", full)
    results, summary = scan([box], action="clean", keep=lambda raw, result: "Q")
    assert box.read_bytes() == before
    assert [r.status for r in results[:3]] == ["clean", "infected", "clean"]
    assert not any(r.changed for r in results)
    assert results[1].write_error == "not rewritten: mailbox left unchanged"
    assert "rewriting failed, the mailbox was left unchanged" in results[3].error
    assert summary.changed == 0 and summary.write_errors == 1 and summary.errors == 1


def test_held_results_beyond_memory_come_back_in_order_from_the_spool(tmp_path, monkeypatch):
    from mailguard.mailbox import held

    monkeypatch.setattr(held, "IN_MEMORY", 3)
    box = tmp_path / "box"
    box.write_bytes(mbox_bytes([message(i, (EICAR if i % 3 == 0 else b"clean") + b"\n") for i in range(10)]))
    results, summary = scan([box], action="clean", keep=lambda raw, result: f"Q{result.location['index']}")
    assert [r.location["index"] for r in results] == list(range(10))
    assert [r.changed for r in results] == [i % 3 == 0 for i in range(10)]
    assert [r.quarantine_id for r in results if r.changed] == ["Q0", "Q3", "Q6", "Q9"]
    assert summary.changed == 4 and summary.messages == 10
    assert EICAR not in box.read_bytes()


@pytest.mark.parametrize("action", ["report", "tag"])
def test_progress_is_told_of_every_result_once_and_moves_while_an_mbox_is_rewritten(mixed, action):
    folder, _ = mixed
    told: list[str] = []
    yielded_when_told: list[int] = []
    results = []
    keep = (lambda raw, result: "Q") if action == "tag" else None
    with OfflineScan([str(folder)], Policy(), jobs=2, action=action, keep=keep, engine_factory=EicarEngine) as run:
        def progress(result):
            told.append(result.where())
            yielded_when_told.append(len(results))

        run.progress = progress
        for result in run.results():
            results.append(result)
    assert sorted(told) == sorted(r.where() for r in results)  # each result once, none twice
    mbox_told = [n for where, n in zip(told, yielded_when_told) if where.startswith(str(folder / "a.mbox"))]
    assert len(mbox_told) == 60
    if action == "tag":
        # Held until the new mbox is in place, yet told as they were scanned: all 60 before any came out.
        assert set(mbox_told) == {0}
    else:
        assert mbox_told == sorted(mbox_told) and mbox_told[-1] == 59
