import io
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from mailguard.mailbox import mbox
from mailguard.mailbox.mbox import NotAnMbox, read_mbox
from tests.mailbox.fixtures import FROM_LINE, mbox_bytes, message


def read_all(data: bytes, max_size: int = 1 << 20, **kwargs):
    return list(read_mbox(io.BytesIO(data), max_size=max_size, **kwargs))


def read_in_ranges(data: bytes, cuts: list[int], max_size: int = 1 << 20):
    bounds = [0, *sorted(set(cuts)), None]
    found = []
    for start, stop in zip(bounds, bounds[1:]):
        stream = io.BytesIO(data)
        stream.seek(max(0, start - 1))
        found += read_mbox(stream, max_size=max_size, start=start, stop=stop)
    return found


def test_messages_come_back_as_delivered():
    originals = [message(1, b"From the start\n>From quoted\n"), message(2), message(3, b"")]
    found = read_all(mbox_bytes(originals))
    assert [m.content for m in found] == originals
    assert [m.from_line for m in found] == [FROM_LINE] * 3
    assert all(m.problem == "" for m in found)


def test_spans_tile_the_file_and_count_lines():
    data = mbox_bytes([message(i) for i in range(5)])
    found = read_all(data)
    assert found[0].offset == 0
    assert [a.offset + a.length for a in found[:-1]] == [b.offset for b in found[1:]]
    assert found[-1].offset + found[-1].length == len(data)
    assert sum(m.newlines for m in found) == data.count(b"\n")


def test_content_length_is_ignored():
    # a lying Content-Length must not hide the second message inside the first
    first = b"Content-Length: 5000\nSubject: liar\n\nshort\n"
    found = read_all(mbox_bytes([first, message(2)]))
    assert [m.content for m in found] == [first, message(2)]


def test_unquoted_from_in_a_body_does_not_split_without_a_date():
    data = FROM_LINE + b"Subject: a\n\nline\nFrom me to you\n\n" + FROM_LINE + b"Subject: b\n\n"
    assert len(read_all(data)) == 2


def test_crlf_mbox():
    data = (b"From a@b Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\nx\r\n\r\n"
            b"From a@b Mon Jan  1 00:00:00 2024\r\nSubject: b\r\n\r\ny\r\n")
    found = read_all(data)
    assert [m.content for m in found] == [b"Subject: a\r\n\r\nx\r\n", b"Subject: b\r\n\r\ny\r\n"]


def test_a_file_not_starting_with_a_separator_is_refused():
    with pytest.raises(NotAnMbox):
        read_all(b"Subject: hi\n\nbody\n")


def test_a_truncated_last_message_is_reported():
    data = mbox_bytes([message(1), message(2, b"cut in the mid")])[:-2]
    found = read_all(data)
    assert found[0].problem == ""
    assert "truncated" in found[1].problem
    cut_in_header = mbox_bytes([message(1)]) + FROM_LINE + b"Subject: x\nFrom: y\n"
    assert "inside its header" in read_all(cut_in_header)[1].problem


def test_oversized_messages_are_walked_past_not_kept():
    big = message(2, b"x" * 5000 + b"\n")
    found = read_all(mbox_bytes([message(1), big, message(3)]), max_size=1000)
    assert [m.content is None for m in found] == [False, True, False]
    assert found[1].size == len(big)
    assert found[1].head.startswith(b"From: a@example.org")
    assert found[2].content == message(3)


def test_over_sized_size_does_not_depend_on_block_edges(monkeypatch):
    # The blank line before the next separator is not part of the message, even when the
    # reader had already let go of the bytes before that separator (an over-sized message).
    big = message(2, b"x" * 300 + b"\n")
    data = mbox_bytes([message(1), big, message(3)]).replace(b"\n", b"\r\n")
    expected = [m.size for m in read_all(data, max_size=100)]
    monkeypatch.setattr(mbox, "HEAD_SIZE", 16)
    for block in (1, 2, 3, 5, 7, 11):
        monkeypatch.setattr(mbox, "READ_SIZE", block)
        found = read_all(data, max_size=100)
        assert [m.size for m in found] == expected
        assert found[1].content is None and found[1].size == len(big.replace(b"\n", b"\r\n"))


def test_quoted_lines_are_unquoted_wherever_blocks_end(monkeypatch):
    body = b">From a\n>>From b\nx>From c\n>From "
    data = mbox_bytes([message(1, body + b"\n"), message(2)])
    for block in (1, 2, 3, 5, 1 << 20):
        monkeypatch.setattr(mbox, "READ_SIZE", block)
        assert read_all(data)[0].content == message(1, body + b"\n")  # mboxrd: quoted, then unquoted


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"")), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=4),
    block=st.integers(min_value=1, max_value=64),
    max_size=st.sampled_from([40, 1 << 20]),
)
def test_any_cut_into_ranges_reads_the_same_messages(bodies, cuts, block, max_size):
    data = mbox_bytes([message(i, body + b"\n") for i, body in enumerate(bodies)])
    cuts = [c for c in cuts if c < len(data)]
    in_one_block = read_all(data, max_size=max_size)
    old = mbox.READ_SIZE
    mbox.READ_SIZE = block  # small blocks put separators across block edges
    try:
        whole = read_all(data, max_size=max_size)
        ranged = read_in_ranges(data, cuts, max_size=max_size)
    finally:
        mbox.READ_SIZE = old
    assert ranged == whole == in_one_block
    assert len(whole) == len(bodies)
    assert sum(m.length for m in whole) == len(data)
    assert sum(m.newlines for m in whole) == data.count(b"\n")


class _Generated(io.RawIOBase):
    """An mbox of ``total`` bytes made on the fly, so the test itself holds none of it."""

    def __init__(self, total: int) -> None:
        self.unit = mbox_bytes([message(1, b"y" * 4000 + b"\n")])
        self.left = total

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        count = min(self.left, max(1, size // len(self.unit))) if self.left > 0 else 0
        self.left -= count
        return self.unit * count


def _peak_while_reading(total: int, max_size: int) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_mbox(_Generated(total), max_size=max_size))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_mailbox():
    small_count, small_peak = _peak_while_reading(200, 1 << 20)
    big_count, big_peak = _peak_while_reading(20000, 1 << 20)
    assert big_count == 100 * small_count
    # Bounded by a block plus a message, not by the 80 MB mailbox.
    assert big_peak < 4 * mbox.READ_SIZE
    assert big_peak < small_peak * 1.5 + 65536


@pytest.mark.parametrize("filler", [b"", b" ", b"From", b"Fro m ", b">From x\n", b"QUJD" * 30, b"a b " * 300])
def test_from_search_is_exact(filler: bytes) -> None:
    from mailguard.mailbox.mbox import find_from

    for count in (0, 3, 40, 200):
        for buf in (filler * count + b"From " + filler * 3 + b"\nFrom x", bytearray(filler * count + b"From")):
            for pos, end in ((0, len(buf)), (1, len(buf) - 2), (len(buf) // 2, len(buf)), (3, 2)):
                assert find_from(buf, pos, end) == buf.find(b"From ", pos, end)
