"""Sessions for ``bench/fuzz_imap.py --machine``: the whole IMAP machine driven by generated
clients and a reactive, misbehaving server, with no socket and no clock.

Each input is one session, deterministic for its seed: a greeting, then client commands from a
vocabulary that reaches every step of the machine (LOGIN, SELECT, FETCH in many forms and in
order so the read-ahead starts, UID FETCH, STORE, IDLE, APPEND with literals, STARTTLS,
COMPRESS, ENABLE, garbage), split at random points. The server answers what the machine sends
it, as a server would, from a small mailbox whose messages carry ``MARK``; at random it lies
about sizes, answers NO, sends fewer or other items, and injects grammar-generated responses
(fuzz_imap.Gen) before and after its answers. Requests are answered at random too: scans (the
message rewritten so ``MARK`` is gone, or the quarantine failing, or a scan that could not
complete), cache look-ups, TLS switches; and now and then the driver's clock runs out.

Checked for every session:

- nothing but events comes out of the machine (a crash is any exception);
- it stops: bounded events for the bytes fed (a hang is a session that keeps producing);
- what the client gets frames cleanly, response by response, as the proxy's own reader and
  imaplib both read it (differential, fuzz_imap.compare_with_imaplib);
- no FETCH data the client gets carries ``MARK``: nothing unscanned reaches a client as message
  data (on-scan-error = block, so a message too large to scan gets a notice).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.events import (
    NEED_DATA, Closed, SendToClient, SendToServer, Side, StartTls, SwitchToRelay, TlsEstablished, TlsFailed,
)
from mailguard.protocols.imap.events import CacheEntry, CacheLookup, ScanFetched, Scanned
from mailguard.protocols.imap.limits import ImapLimits
from mailguard.protocols.imap.machine import ImapOptions, ImapProxy
from mailguard.protocols.imap.responses import ResponseKind, ResponseReader
from tests.protocols.imap.machine_script import Outcome

MARK = b"EICAR-UNSCANNED"
#: small enough that messages are over the scan limit now and then
LIMITS = ImapLimits(max_response_literal=3000, max_response_size=80_000, max_command_line=2000,
                    max_command_literal=900, max_append_literal=1500, max_command_size=4000)


class Failure(Exception):
    pass


@dataclass
class Record:
    unchanged: bool
    original_sha256: str


def message(rng: random.Random, uid: int) -> bytes:
    size = rng.choice((40, 200, 1200, 2900, 3100, 9000))
    body = (b"line %d " % uid + MARK + b"\r\n") * max(1, size // 30)
    return b"Subject: m%d\r\nMIME-Version: 1.0\r\n\r\n" % uid + body


class FakeServer:
    """Answers the machine's commands from a small mailbox, misbehaving at random."""

    def __init__(self, rng: random.Random, gen) -> None:  # type: ignore[no-untyped-def]
        self.r = rng
        self.gen = gen
        self.count = rng.randint(1, 6)
        self.messages = {n: message(rng, 10 + n) for n in range(1, self.count + 1)}

    def noise(self) -> bytes:
        return self.gen.response() if self.r.random() < 0.08 else b""

    def fetch(self, number: int, items: bytes, by_uid: bool) -> bytes:
        r = self.r
        raw = self.messages[number]
        out = [b"UID %d" % (10 + number)]
        if b"RFC822.SIZE" in items:
            size = len(raw) if r.random() < 0.9 else r.choice((0, 5, len(raw) * 3, 10**9))
            out.append(b"RFC822.SIZE %d" % size)
        window = re.search(rb"BODY\.PEEK\[\]<(\d+)\.(\d+)>", items)
        if window:
            offset, length = int(window.group(1)), int(window.group(2))
            part = raw[offset:offset + length]
            out.append(b"BODY[]<%d> {%d}\r\n" % (offset, len(part)) + part)
        elif b"BODY.PEEK[]" in items or b"BODY[]" in items:
            out.append(b"BODY[] {%d}\r\n" % len(raw) + raw)
        if b"FLAGS" in items or r.random() < 0.1:
            out.append(b"FLAGS (\\Seen)")
        if r.random() < 0.05:
            out.append(r.choice((b"RFC822 {%d}\r\n" % len(raw) + raw, b"X-EVIL {4}\r\nEVIL",
                                 b"BODY[TEXT] {%d}\r\n" % len(raw) + raw)))
        r.shuffle(out) if r.random() < 0.1 else None
        return b"* %d FETCH (" % number + b" ".join(out) + b")\r\n"

    def numbers(self, spec: bytes, by_uid: bool) -> list[int]:
        found: list[int] = []
        for part in spec.split(b","):
            low, _, high = part.partition(b":")
            try:
                a = self.count if low == b"*" else int(low)
                b = a if not high else self.count if high == b"*" else int(high)
            except ValueError:
                continue
            if by_uid:
                a, b = a - 10, b - 10
            found += [n for n in range(min(a, b), max(a, b) + 1) if 1 <= n <= self.count]
        return found[:20]

    def answer(self, line: bytes) -> bytes:
        r = self.r
        match = re.match(rb"(\S+) (UID )?(\S+) ?(.*?)\r?\n\Z", line, re.S)
        if match is None:
            return b""  # a literal's octets, or DONE
        tag, by_uid, verb = match.group(1), match.group(2) is not None, match.group(3).upper()
        rest = match.group(4)
        out = [self.noise()]
        status = b"OK" if r.random() < 0.93 else r.choice((b"NO", b"BAD"))
        if verb == b"SELECT" or verb == b"EXAMINE":
            out.append(b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" % self.count)
        elif verb == b"FETCH":
            spec, _, items = rest.partition(b" ")
            for number in self.numbers(spec, by_uid):
                if r.random() < 0.95:
                    out.append(self.fetch(number, items, by_uid))
        elif verb == b"STORE":
            for number in self.numbers(rest.split(b" ")[0], by_uid):
                out.append(b"* %d FETCH (FLAGS (\\Seen))\r\n" % number)
        elif verb == b"CAPABILITY":
            out.append(b"* CAPABILITY IMAP4rev1 IDLE STARTTLS\r\n")
        elif verb == b"IDLE":
            return b"+ idling\r\n" + self.noise()
        elif verb == b"APPEND" and rest.endswith(b"}"):
            return b"+ go\r\n" if r.random() < 0.8 else tag + b" NO [TOOBIG] no\r\n"
        elif verb == b"STARTTLS":
            return tag + b" OK go\r\n" + (self.noise() if r.random() < 0.2 else b"")
        out.append(tag + b" " + status + b" done\r\n")
        out.append(self.noise())
        return b"".join(out)


def client_commands(rng: random.Random, count: int, prefix: bytes) -> list[bytes]:
    n = 0

    def tag() -> bytes:
        nonlocal n
        n += 1
        return prefix + b"%d " % n

    out = [tag() + b"LOGIN alice secret\r\n", tag() + b"SELECT INBOX\r\n"]
    forms = (b"BODY[]", b"BODY.PEEK[]", b"(UID RFC822.SIZE BODY.PEEK[])", b"(FLAGS BODY.PEEK[HEADER])",
             b"BODYSTRUCTURE", b"(BODY.PEEK[]<0.100>)", b"RFC822", b"(BINARY.PEEK[1] ENVELOPE)", b"FLAGS",
             b"(BODY.PEEK[TEXT]<5.20> RFC822.SIZE)", b"PREVIEW", b"(UID FLAGS)")
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.45:
            number = rng.randint(1, count)
            out.append(tag() + b"FETCH %d " % number + rng.choice(forms) + b"\r\n")
        elif r < 0.6:
            first = rng.randint(1, count)
            out += [tag() + b"FETCH %d (BODY.PEEK[])\r\n" % k for k in range(first, first + 3)]
        elif r < 0.7:
            out.append(tag() + b"UID FETCH %d:%d " % (10 + rng.randint(1, count), 10 + count)
                       + rng.choice(forms) + b"\r\n")
        elif r < 0.75:
            out.append(tag() + b"FETCH 1:* " + rng.choice(forms) + b"\r\n")
        else:
            out.append(rng.choice((
                tag() + b"NOOP\r\n", tag() + b"IDLE\r\nDONE\r\n", tag() + b"STARTTLS\r\n",
                tag() + b"COMPRESS DEFLATE\r\n", tag() + b"ENABLE CONDSTORE UTF8=ACCEPT\r\n",
                tag() + b"APPEND INBOX {12}\r\nSubject: x\r\n\r\n", tag() + b"APPEND INBOX {5+}\r\nhello\r\n",
                tag() + b"UID STORE 11 +FLAGS (\\Seen)\r\n", tag() + b"CAPABILITY\r\n",
                tag() + b"URLFETCH x\r\n", b"garbage\r\n", tag() + b"SELECT \"{3}\"\r\n",
            )))
    return out


def split(rng: random.Random, data: bytes) -> list[bytes]:
    if len(data) < 2 or rng.random() < 0.6:
        return [data]
    cuts = sorted(rng.randrange(1, len(data)) for _ in range(rng.randint(1, 3)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


class Session:
    def __init__(self, rng: random.Random, gen) -> None:  # type: ignore[no-untyped-def]
        self.r = rng
        tls = rng.random() < 0.2
        self.options = ImapOptions(server_id="fuzz:143", limits=LIMITS, cache=rng.random() < 0.5,
                                   intercept_tls=tls, client_tls=tls, on_oversize="block",
                                   batch_bytes=rng.choice((1, 5000, 1 << 20)))
        self.machine = ImapProxy(self.options)
        self.server = FakeServer(rng, gen)
        self.gen = gen
        self.to_client: list[bytes] = []
        self.replies: list[object] = []
        self.ended = False
        self.budget = 0

    def feed(self, side: Side, data: bytes) -> None:
        for chunk in split(self.r, data):
            self.machine.receive_data(side, chunk)
        self.pump()

    def pump(self) -> None:
        machine, r = self.machine, self.r
        while not self.ended:
            self.budget -= 1
            if self.budget < 0:
                raise Failure("the machine does not stop producing events")
            event = machine.next_event()
            if event is NEED_DATA:
                if self.replies:
                    reply = self.replies.pop(r.randrange(len(self.replies)))
                    machine.send(reply)  # type: ignore[arg-type]
                    continue
                return
            if isinstance(event, SendToClient):
                self.to_client.append(event.data)
            elif isinstance(event, SendToServer):
                answer = self.server.answer(event.data)
                if answer:
                    for chunk in split(r, answer):
                        machine.receive_data(Side.SERVER, chunk)
            elif isinstance(event, ScanFetched):
                self.replies.append(self.scanned(event))
            elif isinstance(event, CacheLookup):
                machine.send(self.cached(event))
            elif isinstance(event, StartTls):
                machine.send(TlsEstablished(event.side) if r.random() < 0.9 else TlsFailed(event.side, "no"))
            elif isinstance(event, (Closed, SwitchToRelay)):
                self.ended = True

    def scanned(self, event: ScanFetched) -> Scanned:
        r = self.r.random()
        cleaned = event.message.replace(MARK, b"cleaned-bytes-x")
        if r < 0.05:
            return Scanned(event.ident, Outcome("infected", delivered=cleaned, quarantine_failed=True))  # type: ignore[arg-type]
        if r < 0.1:
            before = cleaned if self.r.random() < 0.5 else None
            return Scanned(event.ident, Outcome("unscanned", reasons=("timeout",), delivered=cleaned),  # type: ignore[arg-type]
                           before=before, on_scan_error=self.r.choice(("pass", "block")))
        return Scanned(event.ident, Outcome("infected", delivered=cleaned))  # type: ignore[arg-type]

    def cached(self, event: CacheLookup) -> CacheEntry:
        r = self.r.random()
        if r < 0.6:
            return CacheEntry(event.ident)
        raw = self.server.messages.get(event.uid - 10, b"")
        if r < 0.8:
            return CacheEntry(event.ident, Record(False, hashlib.sha256(raw).hexdigest()), raw.replace(MARK, b"cached"))
        # a record of the message served unchanged before: its bytes are fetched and checked
        return CacheEntry(event.ident, Record(True, hashlib.sha256(b"other").hexdigest()), None)

    def run(self) -> bytes:
        r = self.r
        greeting = b"* OK [CAPABILITY IMAP4rev1 IDLE" + (b" STARTTLS" if r.random() < 0.5 else b"") + b"] hi\r\n"
        if r.random() < 0.05:
            greeting = self.gen.response()
        commands = client_commands(r, self.server.count, self.gen.tagpre)
        self.budget = 2000 + 50 * sum(len(c) for c in commands)
        self.feed(Side.SERVER, greeting)
        for command in commands:
            if self.ended:
                break
            self.feed(Side.CLIENT, command)
            if r.random() < 0.03:
                limits = self.machine.timer()
                if limits:
                    self.machine.timed_out(r.choice(limits).why)
                    self.pump()
        if not self.ended and r.random() < 0.5:
            self.feed(Side.SERVER, b"")
        return b"".join(self.to_client)


def check_client_view(data: bytes, imap, compare) -> int:  # type: ignore[no-untyped-def]
    """Frame what the client got; no FETCH data may carry MARK. The number of responses."""
    reader = ResponseReader()
    reader.receive_data(data)
    events = []
    try:
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
    except RemoteProtocolError as exc:
        raise Failure(f"the client got bytes the proxy's own reader refuses: {exc}") from None
    if reader.buffered:
        # a session ended by BYE in the middle of nothing: every response went out whole
        raise Failure("the client got part of a response")
    for event in events:
        if event.kind is ResponseKind.UNTAGGED and event.word == "FETCH" and MARK in event.raw:
            raise Failure(f"unscanned message data reached the client: {event.raw[:200]!r}")
    compare(data, events, imap)
    return len(events)


def fuzz_machine(seed: int, count: int, gen_factory, imap, compare, progress: bool = False) -> dict:  # type: ignore[no-untyped-def]
    import sys
    import time

    rng = random.Random(seed)
    gen = gen_factory(rng)
    stats = {"sessions": 0, "client_responses": 0, "failures": 0, "crashes": 0, "hangs": 0}
    started = time.perf_counter()
    slowest = 0.0
    for n in range(count):
        t0 = time.perf_counter()
        session = Session(rng, gen)
        try:
            stats["client_responses"] += check_client_view(session.run(), imap, compare)
        except Failure as failure:
            stats["hangs" if "stop producing" in str(failure) else "failures"] += 1
            if stats["failures"] + stats["hangs"] <= 5:
                print(f"FAILURE in session {n} (seed {seed}): {failure}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a crash: anything escaping the machine
            stats["crashes"] += 1
            if stats["crashes"] <= 5:
                import traceback
                print(f"CRASH in session {n} (seed {seed}): {exc!r}", file=sys.stderr)
                traceback.print_exc()
        finally:
            session.machine.close()
        stats["sessions"] += 1
        slowest = max(slowest, time.perf_counter() - t0)
        if progress and n and n % 10_000 == 0:
            print(f"{n} sessions, {stats['failures']} failures, {stats['crashes']} crashes, "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    stats["seconds"] = round(elapsed, 1)
    stats["per_second"] = round(stats["sessions"] / elapsed) if elapsed else 0
    stats["slowest_ms"] = round(slowest * 1000, 1)
    return stats
