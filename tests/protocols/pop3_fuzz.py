"""A structure-aware fuzzer for the POP3 proxy machine (protocols/pop3.py), deterministic by seed.

One input is one session: a client that sends commands (well-formed, broken, pipelined) and a
server that answers each command the machine sends upstream, its own read-ahead included, with
answers built from the protocol's pieces and the traps of RFC 1939 §3: bare CR and LF, lone
dots, unstuffed dot lines, early terminators, junk listing lines, status lines that are not
+OK/-ERR, unsolicited bytes, over-long lines, a close at any point. Scans are answered clean,
rewritten or refused; TLS switches succeed or fail.

Each session is run twice, every piece of data fed whole and then cut at random points, and
checked:

- nothing but the project's protocol errors (``RemoteProtocolError``) leaves the machine;
- no hang: every session ends within ``MAX_STEPS`` events (a hang inside one event is left to
  the caller's watchdog: pytest-timeout in the tests, ``HANG_SECONDS`` of SIGALRM in
  bench/fuzz_pop3.py; the fuzzer touches no signal, so it never cancels the caller's alarm);
- the same output both ways (client bytes, server bytes, scans, the close), except where the
  outcome depends on what arrives in one piece by design: bytes around STLS (an injection is
  caught when it shares a read with the command or the +OK, pop3_stls), an over-size
  message streamed before the fault that ends it, and pipelined commands (the next one goes
  upstream as soon as an answer looks complete, so bytes a server adds after it are read as the
  next answer or refused, depending on which arrived first: both are checked by poplib below);
- a differential check against poplib: the client's bytes are read with poplib's own
  ``_getresp``/``_getlongresp`` for the commands the client sent, and every message poplib
  returns must be exactly one the scanner saw (or the scanner's rewrite of one; TOP: its first
  lines), or an over-size message passed on tagged "unscanned"; every LIST/UIDL line it returns
  must be a listing line and every CAPA line printable.
"""

from __future__ import annotations

import io
import poplib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.pop3 import Pop3Limits, Pop3Options, Pop3Proxy, TlsMode
from mailguard.protocols.pop3_events import (
    NEED_DATA, Closed, MessageUnscanned, ScanMessage, ScanResult, SendToClient, SendToServer, Side, StartTls,
    SwitchToRelay, TlsEstablished, TlsFailed,
)
from mailguard.protocols.pop3_framing import normalise_line_endings, stuff
from mailguard.protocols.pop3_sizes import UNSCANNED_TAG

__all__ = ["FuzzFailure", "Outcome", "fuzz_one", "run_session"]

MAX_STEPS = 20_000
#: how long bench/fuzz_pop3.py lets one input run before it calls it a hang
HANG_SECONDS = 10.0
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

# Pieces of message lines: ordinary text, dots in every position a client could read otherwise,
# line ends that are not CRLF, an early terminator, an answer inside the message, the test virus.
_FRAGMENTS = (
    b"", b"", b"hello", b"From: a@example.org", b"Subject: s", b"Content-Type: text/plain", b" ",
    b".", b"..", b"...", b".x", b"..x", b"\r", b"\n", b"\r\n", b"\n.\r\n", b"\r.\n", b".\n", b"\n.\n",
    b"\r\n.\r\n", b"\r\n..\r\n", b"+OK 10 octets\r\n", b"-ERR", b"\x00", b"\xff\xfe", EICAR, b"=2E",
)
_COMMANDS = (
    b"USER u", b"PASS p", b"CAPA", b"STAT", b"LIST", b"LIST 1", b"LIST 9", b"UIDL", b"UIDL 2", b"RETR 1",
    b"RETR 2", b"RETR 3", b"TOP 1 0", b"TOP 2 1", b"TOP 3 5", b"DELE 1", b"NOOP", b"RSET", b"AUTH PLAIN",
    b"AUTH", b"AUTH GSSAPI", b"STLS", b"QUIT", b"retr 2", b"RETR", b"RETR 1 2", b"TOP 1", b"XTND XMIT",
    b"RETR 1\rRETR 2", b"NOOP\x00", b"APOP u 0123456789abcdef0123456789abcdef",
)
_GREETINGS = (
    b"+OK ready\r\n", b"+OK ready <1.2@x>\r\n", b"+OK<1.2@x>\r\n", b"+ok ready\r\n", b"+\r\n", b"-ERR busy\r\n",
    b"* OK IMAP\r\n", b"+OK ready\n", b"+OK a\rb\r\n", b"",
)
_LINE_ENDS = (b"\r\n",) * 8 + (b"\n", b"\r", b"\r\r\n")
_LISTING = {
    "LIST": re.compile(rb"[0-9]{1,10} [0-9]{1,20}(?: [\x20-\x7e]*)?"),
    "UIDL": re.compile(rb"[0-9]{1,10} [\x21-\x7e]{1,70}"),
}


class FuzzFailure(AssertionError):
    """A session broke one of the fuzzer's rules; the message says which."""


@dataclass
class Outcome:
    """What one run of a session produced, for comparing runs."""

    client: bytes = b""
    server: bytes = b""
    scans: list[tuple[int, bytes]] = field(default_factory=list)
    closed: tuple[str, bool] | None = None
    relayed: bool = False
    protocol_error: str = ""
    #: messages the client may receive: each scanned one as it is, or the scanner's rewrite of it
    deliverable: list[bytes] = field(default_factory=list)
    streamed_unscanned: bool = False
    stls: bool = False


# --- the session: a client script, and a server that answers as the script's seed says ----------


def _message(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 8)):
        line = b"".join(rng.choice(_FRAGMENTS) for _ in range(rng.randrange(0, 3)))
        if rng.random() < 0.03:
            line += b"x" * rng.choice((600, 3000))
        lines.append(line + rng.choice(_LINE_ENDS))
    return b"".join(lines)


def _multiline(rng: random.Random, body: bytes) -> bytes:
    """The body as a server sends it: stuffed right, or raw; with its terminator, or not."""
    roll = rng.random()
    if roll < 0.4:
        return stuff(body)
    wire = body if roll < 0.8 else stuff(body)[:-3]
    if wire and not wire.endswith(b"\n") and rng.random() < 0.7:
        wire += b"\r\n"
    return wire + rng.choice((b".\r\n",) * 6 + (b".\n", b"\r\n.\r\n", b""))


def _status(rng: random.Random, good: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.75:
        line = good
    elif roll < 0.88:
        line = b"-ERR no"
    else:
        line = rng.choice((b"+ok", b"+", b"junk", b"+OK\rX", b"* OK", b"+OK \x00", b"-err"))
    return line + rng.choice(_LINE_ENDS)


def _answer(rng: random.Random, command: bytes) -> bytes:
    """What the fake server says to one command line the machine sent upstream."""
    words = command.rstrip(b"\r\n").split()
    verb = words[0].upper() if words else b""
    args = words[1:]
    if verb in (b"RETR", b"TOP"):
        body = _message(rng)
        status = _status(rng, b"+OK %d octets" % len(body))
        out = status + (_multiline(rng, body) if status.startswith(b"+OK") else b"")
    elif verb in (b"LIST", b"UIDL") and not args:
        lines = []
        for n in range(1, rng.randrange(0, 5)):
            lines.append(b"%d %d" % (n, rng.randrange(0, 400)) if verb == b"LIST" else b"%d uid-%d" % (n, n))
            if rng.random() < 0.2:
                lines.append(b"".join(rng.choice(_FRAGMENTS) for _ in range(2)))
        body = b"".join(line + rng.choice(_LINE_ENDS) for line in lines)
        status = _status(rng, b"+OK")
        out = status + (_multiline(rng, body) if status.startswith(b"+OK") else b"")
    elif verb == b"CAPA" or (verb == b"AUTH" and not args):
        names = [b"TOP", b"USER", b"UIDL", b"STLS", b"PIPELINING", b"SASL PLAIN GSSAPI", b"PLAIN", b"X-\x01"]
        body = b"".join(rng.choice(names) + rng.choice(_LINE_ENDS) for _ in range(rng.randrange(0, 5)))
        status = _status(rng, b"+OK")
        out = status + (_multiline(rng, body) if status.startswith(b"+OK") else b"")
    elif verb == b"AUTH":
        out = rng.choice((b"+ \r\n", b"+ dGVzdA==\r\n", b"+OK in\r\n", b"-ERR no\r\n"))
    elif verb == b"STLS":
        out = rng.choice((b"+OK go\r\n", b"+OK go\r\n", b"-ERR no\r\n", b"+OK go\r\n+OK injected\r\n"))
    elif verb == b"STAT":
        out = _status(rng, b"+OK %d %d" % (rng.randrange(0, 4), rng.randrange(0, 900)))
    elif verb in (b"LIST", b"UIDL"):
        out = _status(rng, b"+OK %s %d" % (args[0], rng.randrange(0, 400)))
    else:
        out = _status(rng, b"+OK")
    if rng.random() < 0.03:
        out += rng.choice((b"+OK unsolicited\r\n", b"\r\n", b"junk"))
    return out


@dataclass
class Session:
    seed: int
    greeting: bytes
    writes: list[bytes]          # what the client sends, write by write
    options: Pop3Options
    scan_rolls: list[float]      # how each scan is answered
    server_closes_after: int     # the server closes after this many answers (-1: never)


def make_session(seed: int) -> Session:
    rng = random.Random(seed)
    writes: list[bytes] = []
    if rng.random() < 0.85:
        writes += [b"USER u\r\n", b"PASS p\r\n"]
    for _ in range(rng.randrange(1, 9)):
        count = 1 if rng.random() < 0.8 else rng.randrange(2, 4)  # sometimes pipelined
        commands = []
        for _ in range(count):
            command = rng.choice(_COMMANDS)
            if rng.random() < 0.05:
                command = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
            commands.append(command + rng.choice((b"\r\n",) * 9 + (b"\n",)))
        writes.append(b"".join(commands))
    if rng.random() < 0.1:
        writes.append(b"x" * 9000)  # an endless line
    small = rng.random() < 0.25
    options = Pop3Options(
        tls=rng.choice(list(TlsMode)), implicit_tls=rng.random() < 0.2,
        on_oversize=rng.choice(("pass", "block")), read_ahead=rng.choice((0, 0, 2)),
        limits=Pop3Limits(max_message=rng.choice((64, 200)) if small else 100_000,
                          max_listing=4096, max_status_line=1024, max_command_line=1024),
    )
    return Session(seed, rng.choice(_GREETINGS), writes, options, [rng.random() for _ in range(40)],
                   rng.randrange(0, 30) if rng.random() < 0.1 else -1)


def _pieces(rng: random.Random | None, data: bytes) -> Iterator[bytes]:
    if rng is None or len(data) < 2:
        yield data
        return
    if len(data) < 40 and rng.random() < 0.2:
        yield from (data[i:i + 1] for i in range(len(data)))
        return
    cuts = sorted(rng.randrange(1, len(data)) for _ in range(rng.randrange(0, 5)))
    bounds = [0, *cuts, len(data)]
    yield from (data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a)


def run_session(session: Session, split_seed: int | None) -> Outcome:
    """Drive one machine through the session; ``split_seed`` None feeds every piece whole."""
    split = None if split_seed is None else random.Random(split_seed)
    answers = random.Random(session.seed ^ 0x5EED)
    machine = Pop3Proxy(session.options)
    out = Outcome()
    to_server: list[bytes] = []   # command lines sent upstream, not answered yet
    pending_upstream = b""
    answered = 0
    scan_index = 0
    steps = 0

    def drain() -> bool:
        """Take events until NEED_DATA; False once the session is over."""
        nonlocal pending_upstream, scan_index, steps
        while True:
            steps += 1
            if steps > MAX_STEPS:
                raise FuzzFailure(f"hang: more than {MAX_STEPS} events")
            try:
                event = machine.next_event()
            except RemoteProtocolError as exc:
                out.protocol_error = str(exc)
                return False
            if event is NEED_DATA:
                return out.closed is None and not out.relayed
            if isinstance(event, SendToClient):
                out.client += event.data
            elif isinstance(event, SendToServer):
                out.server += event.data
                pending_upstream += event.data
                while b"\n" in pending_upstream:
                    line, _, pending_upstream = pending_upstream.partition(b"\n")
                    to_server.append(line)
            elif isinstance(event, ScanMessage):
                out.scans.append((event.number, event.message))
                roll = session.scan_rolls[scan_index % len(session.scan_rolls)]
                scan_index += 1
                if roll < 0.7:
                    out.deliverable.append(event.message)
                    machine.send(ScanResult(None))
                elif roll < 0.9:
                    rewrite = b"X-Tag: rewritten\n" + event.message if roll < 0.8 else b"Subject: cleaned\n\n.\n"
                    out.deliverable.append(normalise_line_endings(rewrite))
                    machine.send(ScanResult(rewrite))
                else:
                    machine.send(ScanResult(None, refusal="could not keep the original"))
            elif isinstance(event, MessageUnscanned):
                out.streamed_unscanned = True
            elif isinstance(event, StartTls):
                roll = session.scan_rolls[scan_index % len(session.scan_rolls)]
                scan_index += 1
                if event.preface:
                    out.client += event.preface
                machine.send(TlsEstablished(event.side) if roll < 0.8 else TlsFailed(event.side, "no"))
            elif isinstance(event, SwitchToRelay):
                out.relayed = True
                return False
            elif isinstance(event, Closed):
                out.closed = (event.reason, event.error)
                return False

    def feed(side: Side, data: bytes) -> bool:
        for piece in _pieces(split, data):
            machine.receive_data(side, piece)
            if not drain():
                return False
        return True

    if not feed(Side.SERVER, session.greeting) or (not session.greeting and not feed(Side.SERVER, b"")):
        return out
    for write in session.writes:
        out.stls = out.stls or b"STLS" in write.upper()
        if not feed(Side.CLIENT, write):
            return out
        while to_server:   # the server answers what reached it, in order, after the client's write
            command = to_server.pop(0)
            if answered == session.server_closes_after:
                feed(Side.SERVER, b"")
                return out
            answered += 1
            if not feed(Side.SERVER, _answer(answers, command)):
                return out
    feed(Side.CLIENT, b"")
    if out.closed is None and not out.relayed and not out.protocol_error:
        feed(Side.SERVER, b"")
    return out


# --- the checks ---------------------------------------------------------------------------------


def _commands_sent(session: Session) -> list[bytes]:
    return b"".join(session.writes).split(b"\n")[:-1]


def check_with_poplib(session: Session, out: Outcome) -> None:
    """Read the client's bytes as poplib does and hold what it returns against what was scanned."""
    reader = poplib.POP3.__new__(poplib.POP3)
    reader.file = io.BytesIO(out.client)
    reader._debugging = 0
    try:
        reader._getresp()
    except poplib.error_proto:
        return  # poplib gives up on the greeting
    for line in _commands_sent(session):
        verb_bytes, _, rest = line.rstrip(b"\r").partition(b" ")
        verb, args = verb_bytes.upper(), rest.split()
        if verb in (b"AUTH", b"STLS"):
            return  # what follows is a SASL exchange or TLS: not poplib's reading any more
        multiline = verb in (b"RETR", b"TOP", b"CAPA") or (verb in (b"LIST", b"UIDL") and not args)
        try:
            if not multiline:
                reader._getresp()
                continue
            _, lines, _ = reader._getlongresp()
        except poplib.error_proto as exc:
            if str(exc).startswith(("b'-ERR", "-ERR")) and "EOF" not in str(exc):
                continue  # a refusal, read whole: on to the next command
            return  # the end of the stream, or a line too long for poplib: it gives up
        data = b"".join(item + b"\r\n" for item in lines)
        if verb == b"RETR" or verb == b"TOP":
            tagged = out.streamed_unscanned and data.startswith(UNSCANNED_TAG)
            if verb == b"RETR" and not tagged and data not in out.deliverable:
                raise FuzzFailure(f"poplib returned a message the scanner did not see: {data[:200]!r}")
            if verb == b"TOP" and not tagged and not any(d.startswith(data) for d in out.deliverable):
                raise FuzzFailure(f"poplib returned a TOP that is no part of a scanned message: {data[:200]!r}")
        elif verb in (b"LIST", b"UIDL"):
            pattern = _LISTING[verb.decode()]
            if not all(pattern.fullmatch(item) for item in lines):
                raise FuzzFailure(f"poplib returned a junk {verb.decode()} line: {lines!r}")
        elif not all(re.fullmatch(rb"[\x20-\x7e]+", item) for item in lines):
            raise FuzzFailure(f"poplib returned a CAPA line that is not printable: {lines!r}")


def fuzz_one(seed: int) -> None:
    """Run and check the session of ``seed``; raises ``FuzzFailure`` (or the machine's own
    exception, a crash) when a rule is broken."""
    session = make_session(seed)
    whole = run_session(session, None)
    cut = run_session(session, seed * 7919 + 1)
    check_with_poplib(session, whole)
    check_with_poplib(session, cut)
    pipelined = any(write.count(b"\n") > 1 for write in session.writes)
    if not (whole.streamed_unscanned or cut.streamed_unscanned or whole.stls or pipelined):
        mine = (_plain(whole.client), whole.server, whole.scans, _closed(whole), whole.relayed)
        theirs = (_plain(cut.client), cut.server, cut.scans, _closed(cut), cut.relayed)
        if mine != theirs:
            raise FuzzFailure(f"output differs whole vs cut:\n{mine!r}\n{theirs!r}")


def _plain(client: bytes) -> bytes:
    # The proxy's own error lines say what it saw; the wording may follow where a read ended.
    return re.sub(rb"-ERR (\[[A-Z/]+\] )?mailguard: [^\r\n]*", b"-ERR mailguard", client)


def _closed(out: Outcome) -> tuple[bool, bool] | None:
    return None if out.closed is None else (True, out.closed[1])
