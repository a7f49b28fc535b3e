"""Structure-aware, differential fuzzing of the IMAP framing (issue 11, "Proof").

    .venv/bin/python bench/fuzz_imap.py [--seed 1] [--count 1000000] [--commands-every 4] [--machine]

Server streams are generated from the response grammar (RFC 9051 §9): tagged, untagged and
continuation responses, status responses with codes, FETCH answers with nested lists and
literals of all three kinds (``{n}``, ``{n+}``, ``~{n}``), unknown responses, literals whose
octets look like responses; then mutated (wrong counts, bare CR/LF/NUL, huge numbers, cut-off
streams, a literal announced at the end of any line). For every stream:

- the reader ends in events or ``RemoteProtocolError``, never another exception;
- its work is bounded (events per call and per byte);
- feeding the stream split at random points gives what feeding it whole gives;
- differential: Python's imaplib reads the same bytes (its own ``_get_response`` over an
  in-memory file); for every response the proxy frames, imaplib sees the same boundaries, kind,
  name and literals, or gives up (raises) first — it never reads on past a response the proxy
  passed as something else.

Client command streams (with ``{n}``/``{n+}``/``~{n}`` literals, IDLE, AUTHENTICATE) get the
first three checks. ``--machine`` fuzzes whole sessions through the IMAP machine instead
(bench/fuzz_imap_machine.py): generated clients, a reactive misbehaving server, random replies to
its requests; crashes, hangs, framing against imaplib, and no unscanned message data to a client. Deterministic for a seed; prints counts, the inputs per second and the
first failing input (as a repr) if any; exits non-zero on a failure.
"""

from __future__ import annotations

import argparse
import imaplib
import io
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard.errors import RemoteProtocolError  # noqa: E402
from mailguard.protocols.imap.commands import CommandReader, LiteralChunk, ReaderState  # noqa: E402
from mailguard.protocols.imap.fetch_response import parse_fetch_response  # noqa: E402
from mailguard.protocols.imap.lexer import Lexer  # noqa: E402
from mailguard.protocols.imap.limits import ImapLimits  # noqa: E402
from mailguard.protocols.events import NEED_DATA  # noqa: E402
from mailguard.protocols.imap.responses import ResponseKind, Response, ResponseReader  # noqa: E402

SMALL = ImapLimits(max_response_line=600, max_response_literal=900, max_response_size=3000,
                   max_command_line=600, max_command_literal=900, max_append_literal=1500,
                   max_command_size=3000, max_continuation_line=300)
LIMITS = (ImapLimits(), SMALL)
#: what the differential check compared: responses and literals imaplib read as the proxy did
COMPARED = {"responses": 0, "literals": 0}


# ---------------------------------------------------------------------------------------------
# imaplib, reading from memory


class ImaplibReader(imaplib.IMAP4):
    """imaplib.IMAP4 whose socket is a byte string: its own ``_get_response`` does the reading."""

    def __init__(self) -> None:
        self._greeting = io.BytesIO(b"* OK ready\r\n")
        self._literals: list[tuple[int, int]] = []
        self._typ: str | None = None
        super().__init__()

    def open(self, host: str = "", port: int = imaplib.IMAP4_PORT, timeout: float | None = None) -> None:
        self.host, self.port, self.sock, self.file = host, port, None, self._greeting

    def send(self, data: bytes) -> None:
        # the CAPABILITY of __init__: answered as a server would
        tag = data.split(b" ", 1)[0]
        at = self.file.tell()
        self.file.seek(0, io.SEEK_END)
        self.file.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
        self.file.seek(at)

    def shutdown(self) -> None:
        pass

    def read(self, size: int) -> bytes:
        at = self.file.tell()
        data = self.file.read(size)
        self._literals.append((at, at + len(data)))
        return data

    def _append_untagged(self, typ: str, dat: object) -> None:
        if self._typ is None:
            self._typ = typ
        super()._append_untagged(typ, dat)

    def frame(self, stream: bytes, tags: list[bytes]) -> tuple[list[tuple], tuple | None]:
        """The responses imaplib reads from ``stream``: (start, end, kind, name, literals) each,
        and the part of a response it gave up in (start, literals read), if it did."""
        self.file = io.BytesIO(stream)
        self.untagged_responses = {}
        self.tagged_commands = {tag: None for tag in tags}
        out: list[tuple] = []
        while self.file.tell() < len(stream):
            start = self.file.tell()
            self._literals, self._typ = [], None
            try:
                line = self._get_response()
            except Exception:  # imaplib gives up: abort, error, or worse (int() of 5000 digits)
                return out, (start, tuple(self._literals))
            if line is None:
                kind, name = ResponseKind.CONTINUATION, ""
            else:
                done = [tag for tag, result in self.tagged_commands.items() if result is not None]
                if done:
                    kind, name = ResponseKind.TAGGED, self.tagged_commands[done[0]][0]
                    self.tagged_commands[done[0]] = None
                else:
                    kind, name = ResponseKind.UNTAGGED, self._typ
            out.append((start, self.file.tell(), kind, name, tuple(self._literals)))
        return out, None


# ---------------------------------------------------------------------------------------------
# generating server streams from the grammar


class Gen:
    def __init__(self, rng: random.Random, tagpre: bytes) -> None:
        self.r = rng
        self.tagpre = tagpre
        self.tags: list[bytes] = [tagpre + b"%d" % n for n in range(5)]

    def pick(self, *options):  # type: ignore[no-untyped-def]
        return self.r.choice(options)

    def number(self) -> bytes:
        r = self.r.random()
        if r < 0.9:
            return b"%d" % self.r.randint(1, 300)
        return self.pick(b"0", b"4294967295", b"4294967296", b"99999999999", b"9" * 5000, b"-1", b"007")

    def text(self) -> bytes:
        words = [self.pick(b"hello", b"[x]", b"(", b")", b'"', b"\\", b"{5}", b"{}", b"NIL", b"\xc3\xa9", b"]")
                 for _ in range(self.r.randint(0, 4))]
        return b" ".join(words)

    def literal_data(self, depth: int) -> bytes:
        r = self.r.random()
        if r < 0.3 and depth < 2:  # octets that read as responses if miscounted
            return self.response(depth + 1) + self.response(depth + 1)
        if r < 0.5:
            return b"Subject: x\r\n\r\nEICAR\r\n"
        return bytes(self.r.getrandbits(8) for _ in range(self.r.randint(0, 12)))

    def literal(self, depth: int, kind: bytes = b"") -> bytes:
        data = self.literal_data(depth)
        kind = kind or self.pick(b"{%d}", b"{%d}", b"{%d}", b"{%d}", b"~{%d}", b"{%d+}")
        return kind % len(data) + b"\r\n" + data

    def string(self, depth: int) -> bytes:
        r = self.r.random()
        if r < 0.35:
            return self.literal(depth)
        if r < 0.6:
            return b'"' + self.pick(b"", b"abc", b'a\\"b', b"a\\\\", b"x (y) [z] {3}") + b'"'
        if r < 0.8:
            return b"NIL"
        return self.pick(b"atom", b"\\Seen", b"12", b"a]b", b"x{3}")

    def value(self, depth: int) -> bytes:
        if depth < 4 and self.r.random() < 0.3:
            return b"(" + b" ".join(self.value(depth + 1) for _ in range(self.r.randint(0, 4))) + b")"
        return self.string(depth)

    def fetch_item(self, depth: int) -> bytes:
        r = self.r.randrange(10)
        if r == 0:
            return b"UID " + self.number()
        if r == 1:
            return b"FLAGS (" + self.pick(b"", b"\\Seen", b"\\Seen \\Answered $Junk") + b")"
        if r == 2:
            return b"RFC822.SIZE " + self.number()
        if r == 3:
            section = self.pick(b"", b"1", b"TEXT", b"HEADER", b'HEADER.FIELDS (Subject "A]")', b"1.MIME")
            partial = self.pick(b"", b"<0>", b"<10>")
            return self.pick(b"BODY", b"BODY.PEEK") + b"[" + section + b"]" + partial + b" " + self.string(depth)
        if r == 4:
            return b"BINARY[" + self.pick(b"", b"1", b"2.1") + b"] " + self.literal(depth, self.pick(b"~{%d}", b"{%d}"))
        if r == 5:
            return self.pick(b"RFC822", b"RFC822.TEXT", b"RFC822.HEADER", b"RFC822.PEEK", b"BODY") + b" " + self.string(depth)
        if r in (6, 7):
            return self.pick(b"ENVELOPE", b"BODYSTRUCTURE", b"X-EVIL") + b" " + self.value(depth)
        if r == 8:
            return b"X-EVIL " + self.literal(depth, b"~{%d}")
        return b"MODSEQ (" + self.number() + b")"

    def response(self, depth: int = 0) -> bytes:
        r = self.r.randrange(20)
        tag = self.r.choice(self.tags) if self.r.random() < 0.9 else self.pick(b"a1", b"*x", b"A.1", b"")
        if r < 6:
            items = b" ".join(self.fetch_item(depth) for _ in range(self.r.randint(0, 4)))
            return b"* " + self.number() + b" FETCH (" + items + b")\r\n"
        if r == 6:
            return b"* " + self.number() + self.pick(b" EXISTS", b" EXPUNGE", b" RECENT") + b"\r\n"
        if r == 7:
            code = self.pick(b"", b"[ALERT] ", b"[UIDNEXT 4] ", b"[PERMANENTFLAGS (\\Seen \\*)] ")
            gap = b" " if not code or self.r.random() < 0.8 else b""  # "* OK[ALERT]" is accepted too
            name = self.pick(b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH", b"FETCH", b"X-EVIL")
            return b"* " + name + gap + code + self.text() + b"\r\n"
        if r == 8:
            code = self.pick(b"", b"[ALERT] ", b"[READ-WRITE] ")
            gap = b" " if not code or self.r.random() < 0.8 else b""  # "a1 OK[READ-WRITE]" is accepted too
            return tag + b" " + self.pick(b"OK", b"NO", b"BAD", b"FETCH") + gap + code + self.text() + b"\r\n"
        if r == 9:
            return self.pick(b"+ ", b"+", b"+ idling ") + self.text() + b"\r\n"
        if r == 10:
            return b"* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\n"
        if r == 11:
            return b"* LIST (\\HasNoChildren) \"/\" " + self.string(depth) + b"\r\n"
        if r == 12:
            return b"* STATUS " + self.string(depth) + b" (MESSAGES 3 UIDNEXT 9)\r\n"
        if r == 13:
            return b"* ID (" + b" ".join(self.string(depth) for _ in range(self.r.randint(0, 4))) + b")\r\n"
        if r == 14:
            name = self.pick(b"X-EVIL", b"METADATA", b"XAPPLEPUSH", b"X-evil", b"Ok-x", b"FETCH1")
            number = self.pick(b"", self.number() + b" ")
            return b"* " + number + name + b" " + self.value(depth) + b"\r\n"
        if r == 15:
            return b"* SEARCH 1 2 3\r\n"
        if r == 16:  # the attack: a literal after text
            hidden = self.response(depth + 1) if depth < 2 else b"x\r\n"
            return b"* " + self.pick(b"OK", b"NO", b"BYE") + b" {%d}\r\n" % len(hidden) + hidden + b"\r\n"
        if r == 17:
            return b"* FLAGS (\\Answered \\Seen)\r\n"
        if r == 18:
            return b"* " + self.number() + b" FETCH (UID " + self.number() + b" BODY[] " + self.literal(depth, b"{%d}") + b")\r\n"
        return tag + b" OK [READ-WRITE] SELECT completed\r\n"

    def stream(self) -> bytes:
        return b"".join(self.response() for _ in range(self.r.randint(1, 5)))

    def mutate(self, data: bytes) -> bytes:
        for _ in range(self.r.choice((0, 0, 1, 1, 2, 3))):
            if not data:
                break
            at = self.r.randrange(len(data) + 1)
            r = self.r.randrange(10)
            if r == 0:  # wrong literal count
                brace = data.rfind(b"{", 0, at)
                close = data.find(b"}", brace)
                if brace >= 0 and close > brace:
                    count = self.pick(b"%d" % self.r.randint(0, 40), b"9" * 25, b"0" * 30 + b"3", b"")
                    data = data[: brace + 1] + count + data[close:]
            elif r == 1:
                data = data[:at] + self.pick(b"\r", b"\n", b"\0", b"\r\n", b" ") + data[at:]
            elif r == 2:
                data = data.replace(b"\r\n", b"\n", 1) if self.r.random() < 0.5 else data.replace(b"\r\n", b"\n")
            elif r == 3:  # a literal announced at the end of some line
                line_end = data.find(b"\r\n", at)
                if line_end >= 0:
                    data = data[:line_end] + self.pick(b" {3}", b"{3}", b" ~{3}", b" {3+}", b" {00003}") + data[line_end:]
            elif r == 4:
                data = data[:at]
            elif r == 5:
                end = min(len(data), at + self.r.randint(1, 20))
                data = data[:at] + data[end:]
            elif r == 6:
                end = min(len(data), at + self.r.randint(1, 20))
                data = data[:at] + data[at:end] * 2 + data[end:]
            elif r == 7:
                data = data[:at] + data[at:].lower() if self.r.random() < 0.3 else data[:at] + self.pick(
                    b"(", b")", b'"', b"[", b"]", b"\\", b"~", b"+", b"*", b"{", b"}") + data[at:]
            elif r == 8:
                data = data[:at] + self.response() + data[at:]
            else:
                data = data[:at] + bytes([self.r.getrandbits(8)]) + data[at + 1:]
        return data


# ---------------------------------------------------------------------------------------------
# checks


class Failure(Exception):
    pass


@dataclass
class Outcome:
    events: list
    error: bool


def run_reader(make, data: bytes, cuts: list[int]) -> Outcome:  # type: ignore[no-untyped-def]
    """Feed ``data`` split at ``cuts``, then EOF; every event, and whether it ended in an error."""
    reader = make()
    events: list = []
    bounds = [0, *cuts, len(data)]
    budget = 4 * len(data) + 64  # events and NEED_DATA answers: bounded work per input
    try:
        chunks = [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
        for chunk in [*chunks, b""]:  # b"": EOF
            reader.receive_data(chunk)
            while True:
                budget -= 1
                if budget < 0:
                    raise Failure("the reader does not stop producing events")
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
                if getattr(reader, "state", None) is ReaderState.PAUSED:
                    return Outcome(events, False)
    except RemoteProtocolError:
        return Outcome(events, True)
    return Outcome(events, False)


def random_cuts(rng: random.Random, size: int) -> list[int]:
    if size and rng.random() < 0.05:
        return list(range(1, size))  # byte by byte
    return sorted(rng.randrange(size + 1) for _ in range(rng.randint(1, 6)))


def check_responses(data: bytes, rng: random.Random, imap: ImaplibReader, tags: list[bytes]) -> Outcome:
    limits = rng.choice(LIMITS)
    whole = run_reader(lambda: ResponseReader(limits), data, [])
    split = run_reader(lambda: ResponseReader(limits), data, random_cuts(rng, len(data)))
    if split.events != whole.events or split.error != whole.error:
        raise Failure("split feeding frames differently from whole feeding")
    for response in whole.events:
        check_parsers(response)
    if limits is SMALL:
        return whole
    compare_with_imaplib(data, whole.events, imap, tags)
    return whole


def compare_with_imaplib(data: bytes, events: list, imap: ImaplibReader, tags: list[bytes]) -> None:
    """For every response the proxy frames in ``data``, imaplib sees the same boundaries, kind,
    name and literals, or gives up (raises) first."""
    ours, at = [], 0
    for response in events:
        literals = tuple((at + a, at + b) for a, b in response.literals)
        ours.append((at, at + len(response.raw), response.kind, response.word, literals))
        at += len(response.raw)
    theirs, gave_up = imap.frame(data, tags)
    COMPARED["responses"] += min(len(ours), len(theirs))
    COMPARED["literals"] += sum(len(its[4]) for its in theirs[: len(ours)])
    for mine, its in zip(ours, theirs):
        # Names may differ only where imaplib hands its caller no data: it reads "[A-Z-]+" of
        # a name, so "* Ok hi" is "O" to it, with nothing after; and then no literal either.
        if mine != its and (mine[:3] != its[:3] or mine[4] != its[4] or mine[4]):
            raise Failure(f"imaplib frames a response otherwise: proxy {mine[:4]} {mine[4]}, imaplib {its[:4]} {its[4]}")
    if len(theirs) < len(ours):
        assert gave_up is not None
        start, literals = gave_up
        mine = ours[len(theirs)]
        if start != mine[0] or literals != mine[4][: len(literals)]:
            raise Failure(f"imaplib read other literals before giving up: proxy {mine}, imaplib {gave_up}")


def check_parsers(response: Response) -> None:
    """What reads a framed response again agrees with the framing: the lexer finds the very
    literals the framing counted, and the FETCH parser ends in data or RemoteProtocolError."""
    if response.literals:
        lexer = Lexer(response.raw, response.raw.index(b" ", 2))
        try:
            nodes = lexer.read_until_end()
        except RemoteProtocolError:
            pass
        else:
            found = []
            stack = list(reversed(nodes))
            while stack:
                node = stack.pop()
                if node.literal:
                    found.append((node.end - len(node.value), node.end))
                stack.extend(reversed(node.items))
            if lexer.pos + 2 == len(response.raw) and found != list(response.literals):
                raise Failure(f"the lexer reads literals {found}, the framing {response.literals}")
    if response.word == "FETCH":
        try:
            parse_fetch_response(response)
        except RemoteProtocolError:
            pass


def command_stream(rng: random.Random) -> bytes:
    def literal() -> bytes:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 10)))
        if rng.random() < 0.3:
            data = b"x\r\nb LOGOUT\r\n"
        kind = rng.choice((b"{%d}", b"{%d+}", b"~{%d}", b"~{%d+}"))
        return kind % len(data) + b"\r\n" + data

    def arg() -> bytes:
        return rng.choice((b"INBOX", b'"a b"', b'"q\\""', b"(\\Seen)", b"BODY.PEEK[HEADER.FIELDS (A B)]",
                           b"1:*", literal(), literal()))

    out = []
    for n in range(rng.randint(1, 4)):
        name = rng.choice((b"LOGIN", b"APPEND", b"FETCH", b"UID FETCH", b"NOOP", b"SELECT", b"IDLE",
                           b"AUTHENTICATE", b"STARTTLS", b"SEARCH"))
        line = b"t%d " % n + name + b"".join(b" " + arg() for _ in range(rng.randint(0, 3))) + b"\r\n"
        if name == b"IDLE":
            line += b"DONE\r\n"
        out.append(line)
    return b"".join(out)


def joined_chunks(events: list) -> list:
    """``events`` with consecutive ``LiteralChunk``s of an APPEND joined: they come as the bytes
    arrive (commands.py streams an upload), so only their joined bytes are the same however split."""
    out: list = []
    for event in events:
        if isinstance(event, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
            out[-1] = LiteralChunk(event.tag, out[-1].data + event.data)
        else:
            out.append(event)
    return out


def check_commands(data: bytes, rng: random.Random) -> Outcome:
    limits = rng.choice(LIMITS)
    whole = run_reader(lambda: CommandReader(limits), data, [])
    split = run_reader(lambda: CommandReader(limits), data, random_cuts(rng, len(data)))
    if joined_chunks(split.events) != joined_chunks(whole.events) or split.error != whole.error:
        raise Failure("split feeding frames commands differently from whole feeding")
    return whole


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--commands-every", type=int, default=4, help="one command stream per N inputs")
    parser.add_argument("--machine", action="store_true",
                        help="whole sessions through the IMAP machine (bench/fuzz_imap_machine.py)")
    args = parser.parse_args(argv)
    if args.machine:
        stats = fuzz_sessions(args.seed, args.count, progress=True)
        stats.update({f"imaplib_agreed_{key}": value for key, value in COMPARED.items()})
        print(" ".join(f"{key}={value}" for key, value in stats.items()))
        return 1 if stats["failures"] or stats["crashes"] or stats["hangs"] else 0
    stats = fuzz(args.seed, args.count, args.commands_every, progress=True)
    print(" ".join(f"{key}={value}" for key, value in stats.items()))
    return 1 if stats["failures"] else 0


def fuzz_sessions(seed: int, count: int, progress: bool = False) -> dict:
    """Whole sessions through the IMAP machine (bench/fuzz_imap_machine.py); what every client
    gets is compared with imaplib's reading of it."""
    from bench.fuzz_imap_machine import Failure as SessionFailure, fuzz_machine

    COMPARED.update(responses=0, literals=0)
    imap = ImaplibReader()
    tags = [imap.tagpre + b"%d" % n for n in range(1, 40)]

    def compare(data: bytes, events: list, reader: ImaplibReader) -> None:
        try:
            compare_with_imaplib(data, events, reader, tags)
        except Failure as failure:
            raise SessionFailure(str(failure)) from None

    return fuzz_machine(seed, count, lambda rng: Gen(rng, imap.tagpre), imap, compare, progress)


def fuzz(seed: int, count: int, commands_every: int = 4, progress: bool = False) -> dict:
    rng = random.Random(seed)
    COMPARED.update(responses=0, literals=0)
    imap = ImaplibReader()
    gen = Gen(rng, imap.tagpre)
    stats = {"inputs": 0, "responses": 0, "refused": 0, "commands": 0, "failures": 0}
    started = slowest = time.perf_counter()
    slowest = 0.0
    for n in range(count):
        t0 = time.perf_counter()
        is_commands = commands_every and n % commands_every == commands_every - 1
        data = command_stream(rng) if is_commands else gen.stream()
        data = gen.mutate(data)
        try:
            if is_commands:
                outcome = check_commands(data, rng)
                stats["commands"] += 1
            else:
                outcome = check_responses(data, rng, imap, gen.tags)
                stats["responses"] += len(outcome.events)
            stats["refused"] += outcome.error
        except Failure as failure:
            stats["failures"] += 1
            if stats["failures"] <= 5:
                print(f"FAILURE at input {n} (seed {seed}): {failure}\n  {data!r}", file=sys.stderr)
        except Exception as exc:  # a crash: anything but RemoteProtocolError out of a reader
            stats["failures"] += 1
            if stats["failures"] <= 5:
                print(f"CRASH at input {n} (seed {seed}): {exc!r}\n  {data!r}", file=sys.stderr)
        stats["inputs"] += 1
        slowest = max(slowest, time.perf_counter() - t0)
        if progress and n and n % 100_000 == 0:
            print(f"{n} inputs, {stats['failures']} failures, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    stats.update({f"imaplib_agreed_{key}": value for key, value in COMPARED.items()})
    stats["seconds"] = round(elapsed, 1)
    stats["per_second"] = round(stats["inputs"] / elapsed) if elapsed else 0
    stats["slowest_ms"] = round(slowest * 1000, 1)
    return stats


if __name__ == "__main__":
    sys.exit(main())
