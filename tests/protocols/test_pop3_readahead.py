"""Byte scripts of the POP3 machine's read-ahead (pop3_readahead): message n+1 is fetched with
TOP and scanned while the client reads message n, and served only when the client asks for it.

Most scripts start as fetchmail and Thunderbird do, with a LIST, so the sizes are known; the
read-ahead of a message whose size is not known starts with a LIST of its own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.protocols.pop3 import TOP_WHOLE_MESSAGE, Phase, Pop3Options
from mailguard.protocols.pop3_events import ScanMessage, ScanResult
from mailguard.protocols.pop3_framing import stuff
from tests.protocols.pop3_script import Script

ONE = b"Subject: one\r\n\r\nfirst\r\n"
TWO = b"Subject: two\r\n\r\n.dotted line\r\nsecond\r\n"
THREE = b"Subject: three\r\n\r\nthird\r\n"


def top_ahead(number: int) -> bytes:
    return b"TOP %d %d\r\n" % (number, TOP_WHOLE_MESSAGE)


def session(depth: int = 1, listed: bool = True, **options: object) -> Script:
    """Logged in; with ``listed`` the client asked LIST, and the server gave every size."""
    s = Script(Pop3Options(read_ahead=depth, **options))  # type: ignore[arg-type]
    for line in (b"USER u\r\n", b"PASS p\r\n"):
        s.client(line).server(b"+OK\r\n")
    if listed:
        listing = b"".join(b"%d %d\r\n" % (n, len(m)) for n, m in enumerate((ONE, TWO, THREE, ONE), 1))
        s.client(b"LIST\r\n").server(b"+OK 4 messages\r\n" + listing + b".\r\n")
    s.take_client(), s.take_server()
    return s


def retr_from_server(s: Script, number: int, message: bytes, result: bytes | None = None) -> bytes:
    s.client(b"RETR %d\r\n" % number)
    assert s.take_server() == b"RETR %d\r\n" % number
    s.server(b"+OK %d octets\r\n" % len(message) + stuff(message))
    assert [m.message for m in s.take(ScanMessage)] == [message]  # type: ignore[attr-defined]
    s.send(ScanResult(result))
    return s.take_client()


def answer_ahead(s: Script, number: int, message: bytes, result: bytes | None = None) -> None:
    """The server answers our read-ahead TOP; the driver scans it."""
    assert s.take_server() == top_ahead(number)
    s.server(b"+OK\r\n" + stuff(message))
    scans = s.take(ScanMessage)
    assert [(m.number, m.message, m.command) for m in scans] == [(number, message, "TOP")]  # type: ignore[attr-defined]
    s.send(ScanResult(result))


def test_next_message_is_fetched_ahead_and_served_without_a_round_trip() -> None:
    s = session()
    assert retr_from_server(s, 1, ONE) == b"+OK %d octets\r\n" % len(ONE) + stuff(ONE)
    answer_ahead(s, 2, TWO)
    assert s.take_client() == b""  # nothing of a message the client has not asked for
    s.client(b"RETR 2\r\n")
    assert s.take_client() == b"+OK %d octets\r\n" % len(TWO) + stuff(TWO)
    assert s.take_server() == top_ahead(3)  # and on to the next one


def test_a_rewritten_message_from_read_ahead_has_its_size_and_later_sizes_follow() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    cleaned = b"X-MailGuard-Result: infected\r\nSubject: two\r\n\r\ncleaned\r\n"
    answer_ahead(s, 2, TWO, cleaned)
    s.client(b"RETR 2\r\n")
    assert s.take_client() == b"+OK %d octets\r\n" % len(cleaned) + stuff(cleaned)
    assert s.take_server() == top_ahead(3)
    s.server(b"-ERR no such message\r\n")  # there is no message 3
    s.client(b"LIST 2\r\n")
    assert s.take_server() == b"LIST 2\r\n"
    s.server(b"+OK 2 %d\r\n" % len(TWO))
    assert s.take_client() == b"+OK 2 %d\r\n" % len(cleaned)


def test_top_is_cut_from_the_message_fetched_ahead() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    answer_ahead(s, 2, TWO)
    s.client(b"TOP 2 0\r\n")
    assert s.take_client() == b"+OK\r\nSubject: two\r\n\r\n.\r\n"
    assert s.take_server() == b""  # TOP does not start another read-ahead


def test_client_command_waits_for_the_read_ahead_and_keeps_order() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    s.client(b"DELE 1\r\n")  # arrives while our TOP 2 is in flight
    assert s.take_server() == top_ahead(2)
    s.server(b"+OK\r\n" + stuff(TWO))
    s.send(ScanResult(None))
    s.take(ScanMessage)
    assert s.take_server() == b"DELE 1\r\n"
    s.server(b"+OK deleted\r\n")
    assert s.take_client() == b"+OK deleted\r\n"


def test_a_deleted_message_is_not_served_from_read_ahead() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    answer_ahead(s, 2, TWO)
    s.client(b"DELE 2\r\n").server(b"+OK\r\n")
    s.take_server(), s.take_client()
    s.client(b"RETR 2\r\n")
    assert s.take_server() == b"RETR 2\r\n"  # the server says what RETR of a deleted message gets
    s.server(b"-ERR message is deleted\r\n")
    assert s.take_client() == b"-ERR message is deleted\r\n"


def test_another_message_goes_upstream_and_the_one_ahead_waits() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    answer_ahead(s, 2, TWO)
    assert retr_from_server(s, 3, THREE).endswith(stuff(THREE))
    assert s.take_server() == b""  # a jump: no read-ahead until the client reads in order again
    assert retr_from_server(s, 4, ONE).endswith(stuff(ONE))
    assert s.take_server() == b""  # the listing has no message 5


def test_messages_opened_out_of_order_are_not_read_ahead_until_a_run_starts() -> None:
    s = session(depth=2)
    assert retr_from_server(s, 3, THREE).endswith(stuff(THREE))
    assert s.take_server() == b""  # opened alone: nothing fetched and scanned for nothing
    assert retr_from_server(s, 2, TWO).endswith(stuff(TWO))
    assert s.take_server() == b""  # backwards is no run either
    assert retr_from_server(s, 3, THREE).endswith(stuff(THREE))
    assert s.take_server() == top_ahead(4)  # 2 then 3: a run, read ahead again


def test_no_read_ahead_past_the_count_stat_gave() -> None:
    s = session()
    s.client(b"STAT\r\n").server(b"+OK 1 %d\r\n" % len(ONE))
    s.take_server(), s.take_client()
    retr_from_server(s, 1, ONE)
    assert s.take_server() == b""
    assert s.proxy.phase is Phase.COMMAND


def test_a_refused_read_ahead_stops_reading_ahead() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    assert s.take_server() == top_ahead(2)
    s.server(b"-ERR no such message\r\n")
    assert s.take_client() == b""
    retr_from_server(s, 1, ONE)
    assert s.take_server() == b""  # 2 and beyond are known not to exist


def test_pipelined_next_command_is_served_instead_of_reading_ahead() -> None:
    s = session()
    s.client(b"RETR 1\r\nRETR 2\r\n")
    assert s.take_server() == b"RETR 1\r\n"
    s.server(b"+OK\r\n" + stuff(ONE))
    s.take(ScanMessage)
    s.send(ScanResult(None))
    assert s.take_server() == b"RETR 2\r\n"  # no TOP: the client already said what it wants


def test_a_message_longer_than_its_listed_size_is_dropped_and_fetched_again_on_request(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mailguard.protocols.pop3_readahead as module

    monkeypatch.setattr(module, "READ_AHEAD_MAX_MESSAGE", 100)
    s = session(listed=False)
    retr_from_server(s, 1, ONE)
    assert s.take_server() == b"LIST\r\n"
    s.server(b"+OK\r\n1 %d\r\n2 90\r\n.\r\n" % len(ONE))  # claims 90 octets, then sends far more
    assert s.take_server() == top_ahead(2)
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 1000
    s.server(b"+OK\r\n" + stuff(big))
    assert s.take(ScanMessage) == [] and s.take_client() == b""
    assert s.proxy.phase is Phase.COMMAND
    s.client(b"RETR 2\r\n")
    assert s.take_server() == b"RETR 2\r\n"


def test_a_refused_scan_is_not_kept_and_the_client_retr_tries_again() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    assert s.take_server() == top_ahead(2)
    s.server(b"+OK\r\n" + stuff(TWO))
    s.take(ScanMessage)
    s.send(ScanResult(None, refusal="could not keep the original in quarantine"))
    assert s.take_client() == b""
    assert s.take_server() == b""  # not fetched again and again while the quarantine fails
    s.client(b"RETR 2\r\n")
    assert s.take_server() == b"RETR 2\r\n"


def test_server_drop_during_read_ahead_tells_the_client() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    s.server(b"+OK\r\nSubject: two\r\n")
    s.server(b"")  # the server closes in the middle of the message fetched ahead
    assert s.take_client().startswith(b"-ERR")
    assert s.closed is not None and s.closed.error


def test_two_ahead_the_next_fetch_starts_as_soon_as_one_is_scanned() -> None:
    s = session(depth=2)
    retr_from_server(s, 1, ONE)
    answer_ahead(s, 2, TWO)
    answer_ahead(s, 3, THREE)  # chained at once: no client command needed
    assert s.take_server() == b""  # two ahead of message 1: enough
    s.client(b"RETR 2\r\n")
    assert s.take_client() == b"+OK %d octets\r\n" % len(TWO) + stuff(TWO)
    assert s.take_server() == top_ahead(4)  # 3 is held; 4 is two ahead of 2
    s.server(b"-ERR no such message\r\n")
    s.client(b"RETR 3\r\n")
    assert s.take_client() == b"+OK %d octets\r\n" % len(THREE) + stuff(THREE)
    assert s.take_server() == b""  # the server has no message 4


def test_without_a_listing_the_sizes_are_asked_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mailguard.protocols.pop3_readahead as module

    s = session(listed=False)
    retr_from_server(s, 1, ONE)
    assert s.take_server() == b"LIST\r\n"
    s.server(b"+OK 3 messages\r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n" % (len(ONE), len(TWO), len(THREE)))
    assert s.take_client() == b""  # our LIST is ours alone
    answer_ahead(s, 2, TWO)
    s.client(b"RETR 2\r\n")
    assert s.take_client() == b"+OK %d octets\r\n" % len(TWO) + stuff(TWO)
    assert s.take_server() == top_ahead(3)  # sizes known now: no second LIST
    # a large message is left for the client's own RETR
    monkeypatch.setattr(module, "READ_AHEAD_MAX_MESSAGE", len(ONE) - 1)
    s.server(b"+OK\r\n" + stuff(THREE))
    s.take(ScanMessage)
    s.send(ScanResult(None))
    s.client(b"RETR 3\r\n")
    assert s.take_client().endswith(stuff(THREE))
    assert s.take_server() == b""  # there is no message 4 in the listing


def test_a_server_without_a_listing_gets_no_read_ahead() -> None:
    s = session(listed=False)
    retr_from_server(s, 1, ONE)
    assert s.take_server() == b"LIST\r\n"
    s.server(b"-ERR not now\r\n")
    retr_from_server(s, 2, TWO)
    assert s.take_server() == b""


def test_a_listed_large_message_is_not_read_ahead(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mailguard.protocols.pop3_readahead as module

    monkeypatch.setattr(module, "READ_AHEAD_MAX_MESSAGE", len(TWO) - 1)
    s = session()
    retr_from_server(s, 1, ONE)
    assert s.take_server() == b""  # 2 is over the cap: no TOP, and no LIST either (known)


def test_a_top_that_is_not_the_whole_message_is_never_served_as_retr() -> None:
    s = session()
    retr_from_server(s, 1, ONE)
    assert s.take_server() == top_ahead(2)
    # a server whose TOP caps the line count: the header only, shorter than LIST said
    s.server(b"+OK\r\n" + stuff(b"Subject: two\r\n\r\n"))
    assert s.take(ScanMessage) == [] and s.take_client() == b""
    s.client(b"RETR 2\r\n")
    assert s.take_server() == b"RETR 2\r\n"  # the real thing, from the server
    s.server(b"+OK\r\n" + stuff(TWO))
    s.take(ScanMessage)
    s.send(ScanResult(None))
    assert s.take_client().endswith(stuff(TWO))
    assert s.take_server() == b""  # and no more read-ahead with this server


def test_a_message_without_a_final_line_end_is_whole_with_the_one_the_wire_adds() -> None:
    s = session(listed=False)
    retr_from_server(s, 1, ONE)
    unended = b"Subject: x\r\n\r\nno final newline"
    assert s.take_server() == b"LIST\r\n"
    s.server(b"+OK\r\n1 %d\r\n2 %d\r\n.\r\n" % (len(ONE), len(unended)))  # sizes as stored
    assert s.take_server() == top_ahead(2)
    s.server(b"+OK\r\n" + unended + b"\r\n.\r\n")  # the wire ends every line (RFC 1939 §3)
    assert [m.message for m in s.take(ScanMessage)] == [unended + b"\r\n"]  # type: ignore[attr-defined]
    s.send(ScanResult(None))
    s.client(b"RETR 2\r\n")
    # served from read-ahead, with the octet count the server would give
    assert s.take_client() == b"+OK %d octets\r\n" % len(unended) + unended + b"\r\n.\r\n"
    assert s.proxy.served_ahead == 1


def test_read_ahead_is_off_unless_asked_for() -> None:
    s = Script(Pop3Options())
    s.client(b"USER u\r\n").server(b"+OK\r\n").client(b"PASS p\r\n").server(b"+OK\r\n")
    s.take_server()
    s.client(b"RETR 1\r\n")
    s.take_server()
    s.server(b"+OK\r\n" + stuff(ONE))
    s.take(ScanMessage)
    s.send(ScanResult(None))
    assert s.take_server() == b""


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"From .x", b"abc", b" ."]), max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=8),
    client_early=st.booleans(),
)
def test_a_message_read_ahead_in_any_chunking_is_delivered_as_retr_would_deliver_it(
    lines: list[bytes], cuts: list[int], client_early: bool
) -> None:
    message = b"".join(line + b"\r\n" for line in [b"H: v", b"", *lines])
    s = Script(Pop3Options(read_ahead=1))
    for line in (b"USER u\r\n", b"PASS p\r\n"):
        s.client(line).server(b"+OK\r\n")
    s.client(b"LIST\r\n").server(b"+OK\r\n1 %d\r\n2 %d\r\n.\r\n" % (len(ONE), len(message)))
    s.take_client(), s.take_server()
    retr_from_server(s, 1, ONE)
    assert s.take_server() == top_ahead(2)
    if client_early:
        s.client(b"RETR 2\r\n")  # the client asks while the message is still arriving
    wire = b"+OK\r\n" + stuff(message)
    pos = 0
    for cut in cuts:
        if wire[pos:pos + cut]:  # b"" would say the server closed
            s.server(wire[pos:pos + cut])
        pos += cut
    if wire[pos:]:
        s.server(wire[pos:])
    assert [m.message for m in s.take(ScanMessage)] == [message]  # type: ignore[attr-defined]
    assert s.take_client() == b""
    s.send(ScanResult(None))
    if not client_early:
        s.client(b"RETR 2\r\n")
    assert s.take_client() == b"+OK %d octets\r\n" % len(message) + stuff(message)
