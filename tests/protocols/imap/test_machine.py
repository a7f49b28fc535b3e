"""The IMAP proxy machine driven by byte scripts: no sockets, no event loop, no clock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mailguard.protocols.events import NEED_DATA, SendToClient, SendToServer, Side, StartTls, SwitchToRelay, TlsEstablished, TlsFailed
from mailguard.protocols.imap.events import CacheEntry, CacheLookup, CacheWrite, Notice, ScanFetched, Scanned
from mailguard.protocols.imap.flows import NEXT_RESPONSE, Step
from mailguard.protocols.imap.limits import ImapLimits
from mailguard.protocols.imap.machine import ImapOptions
from mailguard.protocols.imap.oversize import UNSCANNED_TAG
from tests.protocols.imap.machine_script import Outcome, Script
from tests.protocols.imap.messages import EICAR, SIMPLE

INFECTED = SIMPLE.replace(b"bye\r\n", EICAR + b"\r\n")
CLEANED = INFECTED.replace(EICAR, b"[removed]")


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_a_fetch_of_the_message_is_scanned_and_answered_from_the_scanned_copy() -> None:
    s = Script().login_select()
    s.client(b"c FETCH 1 BODY[]\r\n")
    assert s.take_server() == b"c FETCH 1 (UID RFC822.SIZE)\r\n"
    s.server(b"* 1 FETCH (UID 5 RFC822.SIZE %d)\r\nc OK done\r\n" % len(INFECTED))
    assert s.take_server() == b"mg1 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    assert s.take_client() == b""  # nothing before the scan
    s.server(b"* 1 FETCH (UID 5 BODY[] " + literal(INFECTED) + b")\r\nmg1 OK done\r\n")
    request = s.scan(delivered=CLEANED, status="infected", detections=("Eicar",))
    assert request.message == INFECTED and request.uid == 5
    # BODY[] sets \Seen (RFC 9051 §6.4.5); our BODY.PEEK[] did not
    assert s.take_server() == b"mg2 UID STORE 5 +FLAGS (\\Seen)\r\n"
    s.server(b"* 1 FETCH (FLAGS (\\Seen))\r\nmg2 OK done\r\n")
    out = s.take_client()
    assert out == (b"* 1 FETCH (BODY[] " + literal(CLEANED) + b")\r\n* 1 FETCH (FLAGS (\\Seen))\r\nc OK done\r\n")
    assert EICAR not in out and s.proxy.stats["scanned"] == 1
    # asked again: answered from the session's memory, without the server and without a scan
    s.client(b"d FETCH 1 (BODY.PEEK[])\r\n")
    assert s.take_server() == b"" and not s.take(ScanFetched)
    assert s.take_client() == b"* 1 FETCH (BODY[] " + literal(CLEANED) + b")\r\nd OK FETCH completed\r\n"


@dataclass
class Record:
    """A rewrite-cache record as the driver hands it over (the fields the machine reads)."""

    unchanged: bool
    original_sha256: str


def cached_script() -> Script:
    s = Script(ImapOptions(server_id="mail:143", cache=True)).login_select()
    return s


def fetch_uid_5(record: Record, served: bytes | None, size: int) -> Script:
    """A cached session's ``UID FETCH 5 (BODY.PEEK[])``, its cache look-up answered with
    ``record`` (and ``served``), and the metadata pass answered with ``size``."""
    s = cached_script()
    s.client(b"c UID FETCH 5 (BODY.PEEK[])\r\n")
    [lookup] = s.take(CacheLookup)
    assert lookup.cache == ("mail:143", "alice", b"INBOX", 7) and lookup.uid == 5
    s.send(CacheEntry(lookup.ident, record, served))
    assert s.take_server() == b"c UID FETCH 5 (UID RFC822.SIZE)\r\n"
    s.server(b"* 1 FETCH (UID 5 RFC822.SIZE %d)\r\nc OK done\r\n" % size)
    return s


def test_a_rewritten_message_in_the_cache_is_served_from_it_without_a_scan() -> None:
    s = fetch_uid_5(Record(False, hashlib.sha256(INFECTED).hexdigest()), CLEANED, len(INFECTED))
    assert not s.take(CacheLookup)  # the record was read once
    assert not s.take(ScanFetched) and s.take_server() == b""
    assert s.take_client() == b"* 1 FETCH (UID 5 BODY[] " + literal(CLEANED) + b")\r\nc OK done\r\n"
    assert s.proxy.stats["cache_hits"] == 1


def test_a_clean_message_in_the_cache_is_fetched_and_checked_against_its_hash() -> None:
    s = fetch_uid_5(Record(True, hashlib.sha256(SIMPLE).hexdigest()), None, len(SIMPLE))
    assert s.take_server() == b"mg1 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    s.server(b"* 1 FETCH (UID 5 BODY[] " + literal(SIMPLE) + b")\r\nmg1 OK done\r\n")
    # decided on the record as it is once the body is here (a signature update may have come)
    [fresh] = s.take(CacheLookup)
    s.send(CacheEntry(fresh.ident, Record(True, hashlib.sha256(SIMPLE).hexdigest()), None))
    assert not s.take(ScanFetched)  # same bytes: no rescan
    assert s.take_client() == b"* 1 FETCH (UID 5 BODY[] " + literal(SIMPLE) + b")\r\nc OK done\r\n"


def test_a_signature_update_while_the_body_is_fetched_rescans_the_message() -> None:
    s = fetch_uid_5(Record(True, hashlib.sha256(INFECTED).hexdigest()), None, len(INFECTED))
    assert s.take_server() == b"mg1 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    s.server(b"* 1 FETCH (UID 5 BODY[] " + literal(INFECTED) + b")\r\nmg1 OK done\r\n")
    # the update made the record stale: the driver's fresh read finds none
    [fresh] = s.take(CacheLookup)
    s.send(CacheEntry(fresh.ident, None, None))
    assert s.take_client() == b""  # nothing before the scan
    request = s.scan(delivered=CLEANED, status="infected", detections=("Eicar",))
    assert request.message == INFECTED
    assert EICAR not in s.take_client()


def test_a_changed_message_under_a_cached_uid_is_scanned_and_recorded() -> None:
    s = fetch_uid_5(Record(True, hashlib.sha256(b"another message").hexdigest()), None, len(INFECTED))
    s.server(b"* 1 FETCH (UID 5 BODY[] " + literal(INFECTED) + b")\r\nmg1 OK done\r\n")
    s.scan(delivered=CLEANED, status="infected")
    [write] = s.take(CacheWrite)
    assert write.original == INFECTED and write.served == CLEANED and write.uid == 5
    assert EICAR not in s.take_client()


def fetch_alone(s: Script, number: int, uid: int, message: bytes) -> bytes:
    """A client FETCH of one message through the two round trips of the interception."""
    s.client(b"f%d FETCH %d (BODY.PEEK[])\r\n" % (number, number))
    meta = s.take_server()
    tag = meta.split(b" ")[0]
    s.server(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n%s OK done\r\n" % (number, uid, len(message), tag))
    body = s.take_server()
    ours = body.split(b" ")[0]
    s.server(b"* %d FETCH (UID %d BODY[] %s)\r\n%s OK done\r\n" % (number, uid, literal(message), ours))
    s.scan()
    return s.take_client()


def test_a_client_reading_in_order_is_read_ahead_of() -> None:
    s = Script().login_select(count=5)
    fetch_alone(s, 1, 11, SIMPLE)
    fetch_alone(s, 2, 12, SIMPLE)
    # two in order: the proxy asks for the sizes of the next ones, then their text
    assert s.take_server() == b"mg3 FETCH 3:5 (UID RFC822.SIZE)\r\n"
    s.server(b"".join(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (n, n + 10, len(SIMPLE)) for n in (3, 4, 5))
             + b"mg3 OK done\r\n")
    assert s.take_server() == b"mg4 FETCH 3:5 (UID BODY.PEEK[])\r\n"
    s.server(b"".join(b"* %d FETCH (UID %d BODY[] %s)\r\n" % (n, n + 10, literal(SIMPLE)) for n in (3, 4, 5))
             + b"* 6 EXISTS\r\nmg4 OK done\r\n")
    scans = s.take(ScanFetched)
    assert [scan.uid for scan in scans] == [13, 14, 15]  # side by side
    assert s.take_client() == b"* 6 EXISTS\r\n"  # what is not ours is relayed
    # the client's FETCH of message 3 waits for its scan, then is answered without the server
    s.client(b"g FETCH 3 (BODY.PEEK[])\r\n")
    assert s.take_client() == b""
    for scan in scans:
        s.send(Scanned(scan.ident, Outcome()))  # type: ignore[arg-type]
    assert s.take_server() == b""
    assert s.take_client() == b"* 3 FETCH (BODY[] " + literal(SIMPLE) + b")\r\ng OK FETCH completed\r\n"
    assert s.proxy.stats["local_answers"] == 1


def _read_ahead_of_3_to_5(s: Script) -> list[ScanFetched]:
    fetch_alone(s, 1, 11, SIMPLE)
    fetch_alone(s, 2, 12, SIMPLE)
    assert s.take_server() == b"mg3 FETCH 3:5 (UID RFC822.SIZE)\r\n"
    s.server(b"".join(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (n, n + 10, len(SIMPLE)) for n in (3, 4, 5))
             + b"mg3 OK done\r\n")
    assert s.take_server() == b"mg4 FETCH 3:5 (UID BODY.PEEK[])\r\n"
    s.server(b"".join(b"* %d FETCH (UID %d BODY[] %s)\r\n" % (n, n + 10, literal(SIMPLE)) for n in (3, 4, 5))
             + b"mg4 OK done\r\n")
    return s.take(ScanFetched)


def test_a_message_read_ahead_is_served_from_its_scan_when_memory_cannot_hold_it() -> None:
    s = Script().login_select(count=5)
    scans = _read_ahead_of_3_to_5(s)
    s.proxy.memory.cap = len(SIMPLE) - 1  # the session's memory is full: it keeps nothing more
    s.client(b"g FETCH 3 (BODY.PEEK[])\r\n")
    for scan in scans:
        s.send(Scanned(scan.ident, Outcome()))  # type: ignore[arg-type]
    s.no_cache()
    # neither fetched nor scanned again
    assert s.take_server() == b"" and not s.take(ScanFetched)
    assert s.take_client() == b"* 3 FETCH (BODY[] " + literal(SIMPLE) + b")\r\ng OK FETCH completed\r\n"
    # what was relayed unscanned (protection off) is not kept that way: the FETCH asks again
    t = Script().login_select(count=5)
    scans = _read_ahead_of_3_to_5(t)
    t.proxy.memory.cap = len(SIMPLE) - 1
    t.client(b"g FETCH 3 (BODY.PEEK[])\r\n")
    for scan in scans:
        t.send(Scanned(scan.ident, None))
    t.no_cache()
    assert t.take_server().startswith(b"g FETCH 3")


def test_a_scan_read_ahead_is_kept_under_the_mailbox_it_was_read_from() -> None:
    s = Script().login_select(count=5)
    scans = _read_ahead_of_3_to_5(s)
    # the client moves to another mailbox while the scans run
    s.client(b"h SELECT Other\r\n")
    assert s.take_server() == b"h SELECT Other\r\n"
    s.server(b"* 5 EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\nh OK [READ-WRITE] done\r\n")
    for scan in scans:
        s.send(Scanned(scan.ident, Outcome()))  # type: ignore[arg-type]
    assert (b"Other", 9, 13) not in s.proxy.memory
    assert (b"INBOX", 7, 13) in s.proxy.memory


def test_records_answered_from_memory_go_out_one_at_a_time() -> None:
    s = Script(ImapOptions(read_ahead=False)).login_select(count=3)
    for number in (1, 2, 3):
        fetch_alone(s, number, number + 10, SIMPLE)
    # event by event, as the driver takes them
    machine = s.proxy
    machine.receive_data(Side.CLIENT, b"g FETCH 1:3 (BODY.PEEK[])\r\n")
    tag = machine.next_event().data.split(b" ")[0]  # type: ignore[union-attr]
    machine.receive_data(Side.SERVER, b"".join(
        b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (n, n + 10, len(SIMPLE)) for n in (1, 2, 3)) + tag + b" OK done\r\n")
    answered = []
    while (event := machine.next_event()) is not NEED_DATA:
        assert not isinstance(event, SendToServer)  # all three from memory
        if isinstance(event, SendToClient) and b"BODY[]" in event.data:
            answered.append(event.data[:4])
            # the driver writes and drains this record before the next one is rendered
            assert not [e for e in machine._events if isinstance(e, SendToClient) and b"BODY[]" in e.data]
    assert answered == [b"* 1 ", b"* 2 ", b"* 3 "]


def test_a_message_over_the_scan_limit_is_streamed_tagged_unscanned() -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 9000 + b"\r\n"
    limits = ImapLimits(max_response_literal=4000, max_response_size=100_000)
    s = Script(ImapOptions(limits=limits, on_oversize="pass")).login_select()
    s.client(b"c FETCH 1 (BODY.PEEK[])\r\n")
    assert s.take_server() == b"c FETCH 1 (UID RFC822.SIZE)\r\n"
    s.server(b"* 1 FETCH (UID 5 RFC822.SIZE %d)\r\nc OK done\r\n" % len(big))
    # a claim above the limit: asked for one octet more than we scan, whatever was claimed
    assert s.take_server() == b"mg1 UID FETCH 5 (UID BODY.PEEK[]<0.4000>)\r\n"
    s.server(b"* 1 FETCH (UID 5 BODY[]<0> " + literal(big[:4000]) + b")\r\nmg1 OK done\r\n")
    assert not s.take(ScanFetched)
    tag = 2
    while (asked := s.take_server()):
        offset, length = map(int, re.search(rb"<(\d+)\.(\d+)>", asked).groups())  # type: ignore[union-attr]
        assert asked == b"mg%d UID FETCH 5 (BODY.PEEK[]<%d.%d>)\r\n" % (tag, offset, length) and length <= 3999
        s.server(b"* 1 FETCH (UID 5 BODY[]<%d> %s)\r\nmg%d OK done\r\n"
                 % (offset, literal(big[offset:offset + length]), tag))
        tag += 1
    out = s.take_client()
    total = len(big) + len(UNSCANNED_TAG)
    assert out == b"* 1 FETCH (BODY[] {%d}\r\n" % total + UNSCANNED_TAG + big + b")\r\nc OK done\r\n"
    assert [n.counter for n in s.take(Notice)] == ["unscanned"]


def test_starttls_on_both_legs_and_injection_behind_it() -> None:
    options = ImapOptions(intercept_tls=True, client_tls=True)
    s = Script(options, greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n")
    # the server leg first: nothing reaches the client before it is TLS
    assert s.take_server() == b"mg1 STARTTLS\r\n" and s.take_client() == b""
    s.server(b"mg1 OK go\r\n")
    assert s.take(StartTls) == [StartTls(Side.SERVER)]
    s.send(TlsEstablished(Side.SERVER))
    assert s.take_client() == b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] IMAP proxy ready\r\n"
    s.client(b"a LOGIN alice secret\r\n")
    assert s.take_client().startswith(b"a NO [PRIVACYREQUIRED]") and s.take_server() == b""
    s.client(b"b STARTTLS\r\n")
    [switch] = s.take(StartTls)
    assert switch.preface == b"b OK Begin TLS negotiation now\r\n"
    s.send(TlsEstablished(switch.side))
    s.client(b"c CAPABILITY\r\n")
    assert s.take_server() == b"c CAPABILITY\r\n"
    # a command behind the client's STARTTLS, before the handshake, ends the session
    t = Script(options, greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
    t.server(b"mg1 OK go\r\n")
    t.send(TlsEstablished(t.take(StartTls)[0].side))
    t.client(b"b STARTTLS\r\nc LOGIN alice secret\r\n")
    assert not t.take(StartTls) and t.closed is not None and t.closed.error
    assert t.take_client().endswith(b"* BYE data after STARTTLS before the TLS handshake; closing\r\n")
    # bytes behind the server's OK are refused too
    u = Script(options, greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
    u.server(b"mg1 OK go\r\n* OK [ALERT] injected\r\n")
    assert not u.take(StartTls) and u.closed is not None and u.closed.error


def _named_tls_up_to_the_client_switch() -> tuple[Script, StartTls]:
    s = Script(ImapOptions(intercept_tls=True, client_tls=False, client_named_tls=True),
               greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n")
    s.take_client()
    s.client(b"a STARTTLS\r\n")
    assert s.take_server() == b"mg1 STARTTLS\r\n"
    s.server(b"mg1 OK begin TLS\r\n")
    assert s.take(StartTls) == [StartTls(Side.SERVER)]
    s.send(TlsEstablished(Side.SERVER))  # transparent mode: deferred until the client names it
    [switch] = s.take(StartTls)
    assert switch.side is Side.CLIENT
    return s, switch


def test_transparent_starttls_refuses_server_plaintext_that_came_during_the_switch() -> None:
    s, switch = _named_tls_up_to_the_client_switch()
    # a man in the middle writes plaintext while the driver reads the client's ClientHello
    s.proxy.receive_data(Side.SERVER, b"* OK [ALERT] injected in plaintext\r\n")
    s.send(TlsEstablished(switch.side))
    out = s.take_client()
    assert b"injected" not in out and s.closed is not None and s.closed.error
    # without the injection the same switch goes on
    t, switch = _named_tls_up_to_the_client_switch()
    t.send(TlsEstablished(switch.side))
    t.client(b"b CAPABILITY\r\n")
    assert t.take_server() == b"b CAPABILITY\r\n" and t.closed is None


def test_transparent_starttls_refuses_pipelined_plaintext_behind_the_command() -> None:
    s = Script(ImapOptions(intercept_tls=True, client_tls=False, client_named_tls=True),
               greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n")
    s.take_client()
    s.client(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    assert b"LOGIN" not in s.take_server() and not s.take(StartTls)
    assert s.closed is not None and s.closed.error
    # the same when it comes while our STARTTLS goes upstream
    t = Script(ImapOptions(intercept_tls=True, client_tls=False, client_named_tls=True),
               greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n")
    t.take_client()
    t.client(b"a STARTTLS\r\n")
    assert t.take_server() == b"mg1 STARTTLS\r\n"
    t.client(b"b LOGIN alice secret\r\n")
    t.server(b"mg1 OK begin TLS\r\n")
    for event in t.take(StartTls):
        t.send(TlsEstablished(event.side))
    assert b"LOGIN" not in t.take_server() and t.closed is not None and t.closed.error
    assert t.take_client().endswith(b"* BYE data after STARTTLS before the TLS handshake; closing\r\n")


def test_a_server_tls_failure_ends_the_session_with_bye() -> None:
    s = Script(ImapOptions(intercept_tls=True, client_tls=True),
               greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
    s.server(b"mg1 OK go\r\n")
    side = s.take(StartTls)[0].side
    s.send(TlsFailed(side, "certificate refused"))
    assert s.take_client() == b"* BYE certificate refused\r\n" and s.closed is not None


def test_starttls_without_interception_hands_the_session_to_a_relay() -> None:
    s = Script(greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
    s.take_client()
    s.client(b"a STARTTLS\r\n")
    assert s.take_server() == b"a STARTTLS\r\n"
    assert s.take(SwitchToRelay) == [SwitchToRelay(b"", b"")] and s.proxy.relayed


def test_a_literal_in_a_status_response_ends_the_session() -> None:
    s = Script().login_select()
    s.client(b"c NOOP\r\n")
    s.server(b"* OK {40}\r\n* 1 FETCH (BODY[] {6}\r\nEICAR!)\r\nc OK done\r\n")
    out = s.take_client()
    assert out.startswith(b"* BYE ") and b"EICAR" not in out
    assert s.closed is not None and s.closed.error


def test_unsolicited_fetch_data_is_reduced_to_what_carries_no_text() -> None:
    s = Script().login_select()
    s.client(b"c NOOP\r\n")
    s.server(b"* 1 FETCH (FLAGS (\\Seen) BODY[] " + literal(INFECTED) + b" X-EVIL {3}\r\nabc)\r\nc OK done\r\n")
    out = s.take_client()
    assert out == b"* 1 FETCH (FLAGS (\\Seen))\r\nc OK done\r\n"
    assert any("dropped" in n.text for n in s.take(Notice))


def test_a_server_silent_during_our_command_gets_the_client_a_bye() -> None:
    s = Script(ImapOptions(answer_timeout=5)).login_select()
    s.client(b"c FETCH 1 BODY.PEEK[]\r\n")
    assert s.proxy.timer() == [(5, "answer", Side.SERVER)]
    s.proxy.timed_out("answer")
    s._drain()
    assert s.take_client() == b"* BYE mailguard: the server stopped answering\r\n"
    assert s.closed is not None and s.closed.error


def test_compress_is_refused_and_never_reaches_the_server() -> None:
    s = Script().login_select()
    s.client(b"c COMPRESS DEFLATE\r\n")
    assert s.take_server() == b""
    assert s.take_client().startswith(b"c NO COMPRESS")


def test_the_servers_silence_counts_only_while_a_response_is_awaited() -> None:
    s = Script(ImapOptions(server_timeout=3, idle_timeout=100)).login_select()
    assert s.proxy.timer() == [(100, "idle", Side.CLIENT)]  # nothing asked of the server: the client's idle time
    s.client(b"c NOOP\r\n")
    s.server(b"* 2 FETCH (FLAGS (\\Seen) BODY[] {10}\r\n")  # half a response
    assert (3, "server", Side.SERVER) in s.proxy.timer()
    s.proxy.timed_out("server")
    s._drain()
    assert s.take_client().startswith(b"* BYE [UNAVAILABLE] the server stopped in the middle of a response")
    assert [n.counter for n in s.take(Notice)] == ["timed_out"]
    # whole responses left unread while a scan runs are not the server's silence
    t = Script(ImapOptions(server_timeout=3)).login_select()
    t.client(b"c UID FETCH 5 (BODY.PEEK[])\r\n")
    t.server(b"* 1 FETCH (UID 5 RFC822.SIZE 5 BODY[]<0> {5}\r\nhello)\r\nc OK done\r\n* 2 EXISTS\r\n")
    assert t.take(ScanFetched) and t.proxy.timer() == []


def test_an_engine_that_stops_says_bye_once_no_fetch_is_half_answered() -> None:
    s = Script().login_select()
    s.client(b"c FETCH 1 (BODY.PEEK[])\r\n")
    s.proxy.stop()
    s.server(b"* 1 FETCH (UID 5 RFC822.SIZE %d)\r\nc OK done\r\n" % len(SIMPLE))
    s.server(b"* 1 FETCH (UID 5 BODY[] " + literal(SIMPLE) + b")\r\nmg1 OK done\r\n")
    assert s.closed is None  # the FETCH is answered first
    s.scan()
    out = s.take_client()
    assert out.endswith(b"c OK done\r\n* BYE mailguard is stopping, please reconnect\r\n")
    assert s.closed is not None and not s.closed.error


def test_an_append_literal_waits_for_the_servers_go_ahead() -> None:
    s = Script().login_select()
    s.client(b"c APPEND INBOX {14}\r\n")
    assert s.take_server() == b"c APPEND INBOX {14}\r\n" and s.take_client() == b""
    s.server(b"+ go ahead\r\n")
    assert s.take_client() == b"+ Ready for literal data\r\n"
    s.client(b"Subject: x\r\n\r\n\r\n")  # the literal, then the end of the command
    assert s.take_server() == b"Subject: x\r\n\r\n\r\n"
    s.server(b"c OK appended\r\n")
    assert s.take_client() == b"c OK appended\r\n"
    # refused instead: the tagged answer is relayed and no literal follows
    s.client(b"d APPEND INBOX {11}\r\n")
    s.server(b"d NO [TOOBIG] no room\r\n")
    assert s.take_client() == b"d NO [TOOBIG] no room\r\n"
    s.client(b"e NOOP\r\n")
    assert s.take_server().endswith(b"e NOOP\r\n")


def test_a_step_taking_a_server_leg_already_held_ends_the_session_with_bye() -> None:
    """An invariant of ours, kept under ``python -O`` (no assert), and the client is told."""
    s = Script().login_select()

    def broken() -> Step:
        s.proxy.take_server()
        s.proxy.take_server()
        yield NEXT_RESPONSE

    s.proxy.spawn(broken(), "broken")
    s.client(b"c NOOP\r\n")
    assert s.take_client().startswith(b"* BYE the server leg taken by")
    assert s.closed is not None and s.closed.error
