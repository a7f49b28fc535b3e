"""bench/fuzz_imap.py with a fixed seed: the framing never crashes, hangs, depends on how the bytes
are split, or frames a response otherwise than imaplib does (issue 11, "Proof")."""

import importlib.util
import sys
from pathlib import Path

from mailguard.protocols.imap.responses import ResponseKind

_PATH = Path(__file__).resolve().parents[3] / "bench" / "fuzz_imap.py"
_SPEC = importlib.util.spec_from_file_location("fuzz_imap", _PATH)
fuzz_imap = importlib.util.module_from_spec(_SPEC)
sys.modules["fuzz_imap"] = fuzz_imap
_SPEC.loader.exec_module(fuzz_imap)


def test_imaplib_reads_a_literal_after_status_text() -> None:
    # what the proxy must not disagree with: imaplib takes "* OK {3}" as announcing three octets
    responses, gave_up = fuzz_imap.ImaplibReader().frame(b"* OK {3}\r\nabc\r\n* 2 EXISTS\r\n", [])
    assert responses == [(0, 15, ResponseKind.UNTAGGED, "OK", ((10, 13),)), (15, 27, ResponseKind.UNTAGGED, "EXISTS", ())]
    assert gave_up is None


def test_imaplib_gives_up_on_a_tagged_status_with_its_code_right_after_the_name() -> None:
    # The proxy passes "a1 OK[READ-WRITE] ..." as one tagged line; imaplib's tagged pattern wants a
    # space after the name and gives up at its start, reading no literal: it never frames it otherwise.
    reader = fuzz_imap.ImaplibReader()
    tag = reader.tagpre + b"7"
    responses, gave_up = reader.frame(b"* 2 EXISTS\r\n" + tag + b" OK[READ-WRITE] done {3}\r\nabc\r\n", [tag])
    assert responses == [(0, 12, ResponseKind.UNTAGGED, "EXISTS", ())]
    assert gave_up == (12, ())


def test_a_fixed_seed_finds_no_crash_no_hang_and_no_disagreement() -> None:
    stats = fuzz_imap.fuzz(seed=20261207, count=4000)
    assert stats["failures"] == 0
    # the differential check did compare: responses and literals imaplib read as the proxy did
    assert stats["imaplib_agreed_responses"] > 1000 and stats["imaplib_agreed_literals"] > 300
    assert stats["commands"] == 1000 and stats["refused"] > 0


def test_whole_sessions_through_the_machine_with_a_fixed_seed() -> None:
    """bench/fuzz_imap.py --machine: generated clients and a misbehaving server through the IMAP
    machine; no crash, no hang, every client view framed as imaplib frames it, and no unscanned
    message data to a client."""
    stats = fuzz_imap.fuzz_sessions(seed=20261207, count=300)
    assert stats["failures"] == stats["crashes"] == stats["hangs"] == 0
    assert stats["sessions"] == 300 and stats["client_responses"] > 2000
    assert fuzz_imap.COMPARED["responses"] > 2000 and fuzz_imap.COMPARED["literals"] > 100
