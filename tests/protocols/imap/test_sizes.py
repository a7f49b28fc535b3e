"""A server's size claims are hints; the octets decide (sizes.py), on plain numbers."""

from __future__ import annotations

from mailguard.protocols.imap.sizes import Handling, fetch_window, handling

LARGEST = 1000


def test_a_message_claimed_too_large_is_asked_for_one_octet_more_than_we_scan() -> None:
    assert fetch_window(10**9, LARGEST) == LARGEST + 1
    assert fetch_window(LARGEST, LARGEST) is None and fetch_window(None, LARGEST) is None


def test_a_small_message_claimed_huge_is_scanned() -> None:
    assert handling(10**9, 131, LARGEST, may_stream=True) is Handling.SCAN


def test_a_message_too_large_streams_only_when_allowed_and_claimed_so() -> None:
    assert handling(10**9, LARGEST + 1, LARGEST, may_stream=True) is Handling.STREAM
    assert handling(10**9, LARGEST + 1, LARGEST, may_stream=False) is Handling.NOTICE
    # claimed small, sent large: the claim would be the literal's length, so no streaming
    assert handling(100, LARGEST + 1, LARGEST, may_stream=True) is Handling.NOTICE
    assert handling(None, LARGEST + 1, LARGEST, may_stream=True) is Handling.NOTICE
