from mailguard.mailbox.discover import MessageFile
from mailguard.mailbox.worker import FileBatch, Worker, policy_for_action
from mailguard.scan.policy import Policy
from tests.mailbox.fixtures import EICAR, EicarEngine, message


def test_actions_map_to_policies():
    assert policy_for_action(Policy(action="replace"), "tag").action == "none"
    assert policy_for_action(Policy(action="replace"), "clean").action == "replace"
    assert policy_for_action(Policy(action="none"), "clean").action == "clean"


def test_rewritten_bytes_are_sent_back_only_for_changed_messages(tmp_path):
    good, bad = tmp_path / "good.eml", tmp_path / "bad.eml"
    good.write_bytes(message(1))
    bad.write_bytes(message(2, EICAR))
    items = tuple(MessageFile(str(p), str(p), p.stat().st_size, {"format": "eml"}, sniffed=True) for p in (good, bad))
    worker = Worker(EicarEngine, Policy(), rewrite=True)
    results = worker.run(FileBatch(items)).results
    assert [r.rewritten is None for r in results] == [True, False]
    assert results[1].identity[1] == bad.stat().st_size
    worker.close()
    assert worker.engine.closed


def test_an_engine_exception_is_an_error_for_that_message_only(tmp_path):
    class Failing(EicarEngine):
        def scan(self, raw):
            if b"boom" in raw:
                raise RuntimeError("boom")
            return super().scan(raw)

    paths = [tmp_path / "a.eml", tmp_path / "b.eml"]
    paths[0].write_bytes(message(1, b"boom\n"))
    paths[1].write_bytes(message(2))
    items = tuple(MessageFile(str(p), str(p), 1, {"format": "mh", "file": p.name}) for p in paths)
    results = Worker(Failing, Policy(), rewrite=False).run(FileBatch(items)).results
    assert [r.status for r in results] == ["error", "clean"]
    assert "RuntimeError: boom" in results[0].error


def test_mbox_messages_come_back_as_rows_and_read_as_results(tmp_path):
    from mailguard.mailbox.discover import MboxFile
    from mailguard.mailbox.worker import CLEAN, MboxChunk, row_result
    from tests.mailbox.fixtures import mbox_bytes

    box = tmp_path / "box"
    box.write_bytes(mbox_bytes([message(1), message(2, EICAR + b"\n")]))
    item = MboxFile(str(box), str(box), box.stat().st_size)
    outcome = Worker(EicarEngine, Policy(), rewrite=False).run(MboxChunk(item, 0, None, True, 1))
    assert outcome.results == [] and len(outcome.rows) == 2
    assert all(type(field) in (int, str, bytes, type(None)) for field in outcome.rows[0])  # pickled in C
    assert outcome.rows[0][6] == CLEAN
    clean, infected = (row_result(str(box), str(box), row) for row in outcome.rows)
    assert (clean.status, infected.status) == ("clean", "infected")
    assert clean.verdict.findings == () and clean.verdict.incomplete == ()
    assert (clean.message_id, clean.subject) == ("<1@example.org>", "message 1")
    assert clean.location == {"format": "mbox", "offset": 0} and clean.span[0] == 0
    assert infected.location["offset"] == clean.span[1]
