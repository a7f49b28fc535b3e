import base64
import hashlib
from pathlib import Path

from mailguard.proxy.imap_cache import CacheRecord, RewriteCache, cache_key


def entry(original: bytes, served: bytes) -> CacheRecord:
    return CacheRecord.build("clean" if original == served else "infected", [], [], original, served)


def test_keys_separate_every_part_of_the_identity() -> None:
    base = ("mail:993", "alice", b"INBOX", 7, 1)
    keys = {cache_key(*base)}
    for index, other in enumerate(("mail:143", "bob", b"Sent", 8, 2)):
        changed = list(base)
        changed[index] = other
        keys.add(cache_key(*changed))
    assert len(keys) == 6
    # no ambiguity from concatenation: ("ab", "c") is not ("a", "bc")
    assert cache_key("ab", "c", b"x", 1, 1) != cache_key("a", "bc", b"x", 1, 1)


def test_round_trip_survives_a_restart_and_files_are_private(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path / "imap-cache")
    key = cache_key("s", "u", b"INBOX", 1, 1)
    record = entry(b"original", b"served")
    cache.put(key, record, b"served")
    again = RewriteCache(tmp_path / "imap-cache", max_memory_bytes=0)
    assert again.record(key) == record
    assert again.blob(key, record) == b"served"
    assert (tmp_path / "imap-cache").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "imap-cache").rglob("*"):
        assert path.stat().st_mode & 0o077 == 0


def test_an_unchanged_message_keeps_only_its_record_and_a_rewritten_one_its_bytes(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path, max_memory_bytes=0)
    clean = cache_key("s", "u", b"INBOX", 1, 1)
    cache.put(clean, entry(b"m" * 100, b"m" * 100), b"m" * 100)
    rewritten = cache_key("s", "u", b"INBOX", 1, 2)
    cache.put(rewritten, entry(b"v" * 100, b"r" * 300), b"r" * 300)
    # no plaintext copy of a clean message on disk: the server has it, the record vouches for it
    assert [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name != "records.log"] == [
        f"{rewritten}.rewritten"]
    assert b"m" * 100 not in (tmp_path / "records.log").read_bytes()
    assert cache.record(clean) is not None and cache.record(clean).unchanged  # type: ignore[union-attr]
    assert cache.blob(clean, cache.record(clean)) is None  # type: ignore[arg-type]
    assert cache.blob(rewritten, cache.record(rewritten)) == b"r" * 300  # type: ignore[arg-type]


def test_memory_still_serves_an_unchanged_message_for_chunk_loops(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path)
    key = cache_key("s", "u", b"INBOX", 1, 1)
    record = entry(b"m" * 100, b"m" * 100)
    cache.put(key, record, b"m" * 100)
    assert cache.blob(key, record) == b"m" * 100


def test_copies_of_unchanged_messages_from_earlier_versions_are_removed(tmp_path: Path) -> None:
    key = cache_key("s", "u", b"INBOX", 1, 1)
    (tmp_path / key[:2]).mkdir()
    old = tmp_path / key[:2] / f"{key}.blob"
    old.write_bytes(b"a clean message")
    RewriteCache(tmp_path, max_memory_bytes=0)
    assert not old.exists()


def test_record_and_rewritten_bounds_drop_whole_entries(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path, max_records=3, max_rewritten_bytes=10_000, max_memory_bytes=0)
    keys = [cache_key("s", "u", b"INBOX", 1, uid) for uid in range(5)]
    for key in keys:
        cache.put(key, entry(b"o", b"r"), b"r")
    assert [cache.record(key) is not None for key in keys] == [False, False, True, True, True]
    small = RewriteCache(tmp_path / "b", max_rewritten_bytes=150, max_memory_bytes=0)
    first, second = cache_key("s", "u", b"I", 1, 1), cache_key("s", "u", b"I", 1, 2)
    small.put(first, entry(b"o", b"r" * 100), b"r" * 100)
    small.put(second, entry(b"o", b"q" * 100), b"q" * 100)
    assert small.record(first) is None and small.record(second) is not None


def test_a_damaged_blob_is_not_served(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path, max_memory_bytes=0)
    key = cache_key("s", "u", b"INBOX", 1, 1)
    record = entry(b"o", b"served")
    cache.put(key, record, b"served")
    next(tmp_path.rglob("*.rewritten")).write_bytes(b"tampered")
    assert cache.blob(key, record) is None


def test_records_live_in_one_log_that_survives_restarts_tombstones_and_a_torn_line(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path, max_records=2, max_memory_bytes=0)
    keys = [cache_key("s", "u", b"INBOX", 1, uid) for uid in range(3)]
    for key in keys:
        cache.put(key, entry(b"o", b"r"), b"r")
    assert not list(tmp_path.rglob("*.json"))  # one file a rewritten entry: its bytes
    cache.close()
    with open(tmp_path / "records.log", "ab") as log:
        log.write(b"torn")  # a crash in the middle of a line
    again = RewriteCache(tmp_path, max_records=2, max_memory_bytes=0)
    assert [again.record(key) is not None for key in keys] == [False, True, True]  # the drop survived
    assert again.record(keys[2]) == entry(b"o", b"r")


def test_the_log_is_rewritten_when_mostly_dead_and_keeps_the_live_records(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mailguard.proxy.imap_cache as module

    monkeypatch.setattr(module, "COMPACT_MIN_LINES", 10)
    cache = RewriteCache(tmp_path, max_records=3, max_memory_bytes=0)
    keys = [cache_key("s", "u", b"INBOX", 1, uid) for uid in range(40)]
    for key in keys:
        cache.put(key, entry(b"o", b"r"), b"r")
    assert (tmp_path / "records.log").read_bytes().count(b"\n") < 20
    assert [cache.record(key) is not None for key in keys[-4:]] == [False, True, True, True]
    again = RewriteCache(tmp_path, max_records=3, max_memory_bytes=0)
    assert [again.record(key) is not None for key in keys[-4:]] == [False, True, True, True]


def test_records_of_the_one_file_format_are_still_read(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    key = cache_key("s", "u", b"INBOX", 1, 1)
    record = entry(b"o", b"served")
    (tmp_path / key[:2]).mkdir()
    (tmp_path / key[:2] / f"{key}.rewritten").write_bytes(b"served")
    (tmp_path / key[:2] / f"{key}.json").write_text(json.dumps(asdict(record)))
    cache = RewriteCache(tmp_path, max_memory_bytes=0)
    assert cache.record(key) == record and cache.blob(key, record) == b"served"


def _following(cache: RewriteCache, generation: list[str]) -> None:
    cache.current_generation = lambda: generation[0] or None


def test_after_an_update_records_are_not_served_as_they_are(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path)
    generation = ["g1"]
    _following(cache, generation)
    key = cache_key("s", "u", b"INBOX", 1, 1)
    record = CacheRecord.build("clean", [], [], b"original", b"original", "g1")
    cache.put(key, record, b"original")
    assert cache.record(key) == record
    generation[0] = "g2"
    assert cache.record(key) is None  # scanned again
    # nothing new found: what was served before, and the record moves to the new generation
    assert cache.served_before(key, b"original", []) == b"original"
    cache.restamp(key, "g2")
    assert cache.record(key).generation == "g2"
    assert RewriteCache(tmp_path).record(key).generation == "g2"  # kept in the log
    generation[0] = ""  # rescan-after-update off: any generation is served
    assert cache.record(key) is not None


def test_after_an_update_a_new_finding_is_served_in_its_new_form_and_nothing_new_keeps_the_old(tmp_path: Path) -> None:
    cache = RewriteCache(tmp_path)
    generation = ["g1"]
    _following(cache, generation)
    key = cache_key("s", "u", b"INBOX", 1, 1)
    cache.put(key, CacheRecord.build("infected", ["A"], [], b"original", b"cleaned of A", "g1"), b"cleaned of A")
    generation[0] = "g2"
    assert cache.served_before(key, b"original", [("A", "2")]) is None  # a record without parts: the new form
    assert cache.served_before(key, b"original", []) == b"cleaned of A"  # nothing found: nothing to remove
    cache.put(key, CacheRecord.build("infected", ["A"], [], b"original", b"cleaned of A", "g1", [("A", "2")]),
              b"cleaned of A")
    assert cache.served_before(key, b"original", [("A", "2")]) == b"cleaned of A"  # byte for byte as before
    assert cache.served_before(key, b"original", []) == b"cleaned of A"     # a detection dropped: still
    assert cache.served_before(key, b"original", [("A", "2"), ("B", "3")]) is None  # something new: the new form
    assert cache.served_before(key, b"original", [("A", "3")]) is None      # a known name in another part
    assert cache.served_before(key, b"another message", [("A", "2")]) is None  # not the message recorded
    cache.put(key, CacheRecord.build("infected", ["A", "B"], [], b"original", b"cleaned of A and B", "g2"),
              b"cleaned of A and B")
    record = cache.record(key)
    assert cache.blob(key, record) == b"cleaned of A and B"  # never the bytes of the replaced record


def test_after_an_update_a_known_name_in_a_new_part_is_served_in_the_new_form(tmp_path: Path) -> None:
    """An update that finds a family the earlier verdict already named, but in another part:
    the earlier form still holds that part, so the client gets the new verdict's form."""
    from mailguard.scan.detectors.sources import prepare
    from mailguard.scan.engine import Engine
    from mailguard.scan.policy import Policy

    first, second = b"first bad payload " * 20, b"second bad payload, a new variant " * 20

    def attachment(name: bytes, data: bytes) -> bytes:
        return (b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment; filename=" + name + b"\r\n\r\n"
                + base64.encodebytes(data).replace(b"\n", b"\r\n"))

    raw = (b"From: a@b\r\nTo: c@d\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           + attachment(b"a.dat", first) + attachment(b"b.dat", second) + b"--XX--\r\n")
    database = tmp_path / "local.hdb"

    def signature(data: bytes) -> str:
        return f"{hashlib.md5(data).hexdigest()}:{len(data)}:Win.Trojan.Family\n"

    def engine() -> tuple[Engine, str]:
        policy, _ = prepare(Policy(signature_paths=(str(database),), clamd_enabled=False))
        return Engine(policy), policy.generation

    cache = RewriteCache(tmp_path / "cache")
    key = cache_key("s", "u", b"INBOX", 1, 1)
    database.write_text(signature(first))
    old, generation = engine()
    verdict = old.scan(raw)
    served = old.apply(raw, verdict)
    earlier = [(f.name, f.part) for f in verdict.findings]
    cache.current_generation = lambda: generation
    cache.put(key, CacheRecord.build(verdict.status.value, verdict.finding_names, verdict.reasons, raw, served,
                                     generation, earlier), served)
    assert base64.b64encode(second[:57]) in served
    database.write_text(signature(first) + signature(second))  # the update: the same name covers more
    new, generation = engine()
    verdict = new.scan(raw)
    assert verdict.finding_names == ["Win.Trojan.Family"]  # the same name as before
    cache.current_generation = lambda: generation
    assert cache.record(key) is None
    assert cache.served_before(key, raw, [(f.name, f.part) for f in verdict.findings]) is None
    # and had the update found only what was found before, the earlier form stands
    assert cache.served_before(key, raw, earlier) == served


def test_a_record_is_read_from_disk_once_and_a_written_one_not_at_all(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    import mailguard.proxy.imap_cache as module

    key, other = cache_key("s", "u", b"INBOX", 1, 1), cache_key("s", "u", b"INBOX", 1, 2)
    cache = RewriteCache(tmp_path, max_memory_bytes=0)
    cache.put(key, entry(b"o", b"r"), b"r")
    cache.put(other, entry(b"m", b"m"), b"m")
    cache.close()
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        reads.append(offset)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(module.os, "pread", counting_pread)
    again = RewriteCache(tmp_path, max_memory_bytes=0)
    # the steps of one fetch: is it cached, what was served, its blob
    for _ in range(3):
        assert again.record(key) == entry(b"o", b"r")
    assert again.blob(key, again.record(key)) == b"r"  # type: ignore[arg-type]
    assert len(reads) == 1
    # a record just written, or replaced, is the one read back, without a read
    again.put(other, entry(b"m", b"x"), b"x")
    assert again.record(other) == entry(b"m", b"x") and len(reads) == 1
    again.restamp(other, "gen2")
    assert again.record(other).generation == "gen2" and len(reads) == 1  # type: ignore[union-attr]
    # and a new engine reads what the last line says
    third = RewriteCache(tmp_path, max_memory_bytes=0)
    assert third.record(other) == replace_generation(entry(b"m", b"x"), "gen2")


def test_parsed_records_are_bounded_and_an_evicted_entry_is_not_served(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mailguard.proxy.imap_cache as module

    monkeypatch.setattr(module, "PARSED_RECORDS", 3)
    cache = RewriteCache(tmp_path, max_records=5, max_memory_bytes=0)
    keys = [cache_key("s", "u", b"INBOX", 1, uid) for uid in range(8)]
    for key in keys:
        cache.put(key, entry(b"o", b"r"), b"r")
    assert len(cache._parsed) == 3
    assert [cache.record(key) is not None for key in keys] == [False] * 3 + [True] * 5


def test_parsed_records_are_bounded_by_bytes_too(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mailguard.proxy.imap_cache as module

    monkeypatch.setattr(module, "PARSED_BYTES", 20_000)
    cache = RewriteCache(tmp_path, max_memory_bytes=0)
    # a record with very many findings: a long log line, too large to keep parsed
    huge = CacheRecord.build("infected", ["Eicar"], [], b"o", b"o", "g",
                             [("Eicar", "%d" % part) for part in range(5000)])
    cache.put(cache_key("s", "u", b"INBOX", 1, 1), huge, b"o")
    assert not cache._parsed and cache._parsed_bytes == 0
    assert cache.record(cache_key("s", "u", b"INBOX", 1, 1)) == huge  # read from the log, still
    assert not cache._parsed
    small = [cache_key("s", "u", b"INBOX", 1, uid) for uid in range(2, 100)]
    for key in small:
        cache.put(key, entry(b"o", b"r"), b"r")
    assert 0 < len(cache._parsed) < len(small)
    assert cache._parsed_bytes == sum(size for _, size in cache._parsed.values()) <= 20_000


def test_long_mailbox_names_are_not_remembered() -> None:
    from mailguard.proxy.imap_cache import _key, _remembered_key

    _remembered_key.cache_clear()
    for n in range(50):
        name = b"%d" % n + b"x" * 100_000  # a client may name any mailbox, at any length
        assert cache_key("s", "u", name, 1, 9) == _key("s", "u", name, 1, 9)
    assert _remembered_key.cache_info().currsize == 0
    cache_key("s", "u", b"INBOX", 1, 9)
    assert _remembered_key.cache_info().currsize == 1


def test_log_lines_of_earlier_versions_are_still_read(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    key = cache_key("s", "u", b"INBOX", 1, 1)
    record = CacheRecord.build("infected", ["Eicar"], [], b"o", b"r", "g1", [("Eicar", "2")])
    # the line an earlier version wrote: asdict and json.dumps, as here
    (tmp_path / "records.log").write_bytes(key.encode() + b" " + json.dumps(asdict(record)).encode() + b"\n")
    cache = RewriteCache(tmp_path, max_memory_bytes=0)
    assert cache.record(key) == record
    cache.put(key, record, b"r")
    assert (tmp_path / "records.log").read_bytes().splitlines()[-1] == key.encode() + b" " + json.dumps(
        asdict(record)).encode()


def test_cache_keys_are_the_same_remembered_or_not() -> None:
    from mailguard.proxy.imap_cache import _key

    assert cache_key("s", "u", b"INBOX", 1, 9) == _key("s", "u", b"INBOX", 1, 9)
    assert cache_key("s", "u", bytearray(b"INBOX"), 1, 9) == _key("s", "u", b"INBOX", 1, 9)  # type: ignore[arg-type]


def replace_generation(record: CacheRecord, generation: str) -> CacheRecord:
    from dataclasses import replace

    return replace(record, generation=generation)
