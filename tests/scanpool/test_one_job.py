"""Both doors run one job (scanpool/job.py): the same message gets the same verdict, the same
bytes and the same quarantined original through the live pool (threads, processes) as through
``mailguard scan --action clean`` (one process, several)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.mailbox.offline import OfflineScan
from mailguard.quarantine import Quarantine
from mailguard.scan.policy import Policy
from mailguard.scanpool.job import scan_message
from mailguard.scanpool.pool import ScanPool
from tests.proxy.harness import clean_message, infected_message, run

MESSAGES = {"clean": clean_message(1), "infected": infected_message(2)}


def _live(raw: bytes, policy: Policy, folder: Path, kind: str):  # noqa: ANN202 - a ScanOutcome
    async def scenario():  # noqa: ANN202
        pool = ScanPool(policy, folder, kind=kind, workers=1)
        try:
            return await pool.scan(raw, "live")
        finally:
            await pool.aclose()

    return run(scenario())


def _offline(raw: bytes, policy: Policy, tmp_path: Path, jobs: int):  # noqa: ANN202
    """(result, the file's bytes afterwards) of ``scan --action clean`` on one .eml file."""
    from mailguard.cli.scan import _quarantine_keeper

    path = tmp_path / "mail" / "message.eml"
    path.parent.mkdir()
    path.write_bytes(raw)
    with OfflineScan([str(path)], policy, jobs=jobs, action="clean",
                     keep=_quarantine_keeper(tmp_path / "offline-q")) as scanner:
        [result] = list(scanner.results())
    return result, path.read_bytes()


def _kept(folder: Path) -> list[bytes]:
    if not folder.exists():
        return []
    quarantine = Quarantine(folder)
    return [quarantine.get(entry.id)[1] for entry in quarantine.list()]


@pytest.mark.parametrize("kind", ["thread", "process"])
@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("action", ["clean", "replace"])
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_both_doors_give_the_same_outcome(tmp_path: Path, name: str, action: str, kind: str, jobs: int) -> None:
    raw = MESSAGES[name]
    policy = Policy(action=action)
    live = _live(raw, policy, tmp_path / "live-q", kind)
    result, after = _offline(raw, policy, tmp_path, jobs)

    assert result.status == live.status == name
    assert tuple(result.verdict.finding_names) == live.detections
    assert tuple(result.verdict.reasons) == live.reasons
    assert not result.error and not result.write_error and not live.error
    # the same bytes: what the live reader gets is what the mailbox now holds
    assert after == (live.delivered if live.delivered is not None else raw)
    assert result.changed == (live.delivered is not None)
    # the same quarantine rule: the original, byte for byte, kept by both or by neither
    assert _kept(tmp_path / "live-q") == _kept(tmp_path / "offline-q") == ([raw] if result.changed else [])
    assert bool(result.quarantine_id) == bool(live.quarantine_id) == result.changed
    if name == "infected":
        assert b"EICAR-STANDARD" not in after
    # a worker process sends back only what a session needs, not the verdict object
    assert (live.verdict is None) == (kind == "process")


def test_the_offline_door_runs_the_live_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a copy of it: the offline worker calls the very function the live pool calls.
    import mailguard.mailbox.worker as offline_worker

    calls: list[bytes] = []

    def spy(raw, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(raw)
        return scan_message(raw, *args, **kwargs)

    monkeypatch.setattr(offline_worker, "scan_message", spy)
    result, _ = _offline(infected_message(3), Policy(), tmp_path, jobs=1)
    assert calls == [infected_message(3)] and result.changed


def test_a_response_that_fails_keeps_the_verdict_for_the_report(tmp_path: Path) -> None:
    # The offline report still names what was found when only the rewrite failed; the live pool
    # settles such a message as unscanned (tests/scanpool/test_scanpool.py).
    from mailguard.mailbox.worker import Worker
    from mailguard.scan.engine import Engine

    class BrokenResponse(Engine):
        def apply(self, raw, verdict):  # type: ignore[no-untyped-def]
            raise RuntimeError("no rewrite")

    verdict, error, rewritten = Worker(BrokenResponse, Policy(), rewrite=True)._verdict(infected_message(4), "")
    assert verdict is not None and verdict.status.value == "infected"
    assert error == "engine failed on this message: RuntimeError: no rewrite" and rewritten is None
