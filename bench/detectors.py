"""Throughput of each detector over one large buffer, against a SHA-256 floor, in one run.

    .venv/bin/python bench/detectors.py                     # 64 MiB, 10/100/1000 body signatures
    .venv/bin/python bench/detectors.py --size 16 --json    # machine-readable
    .venv/bin/python bench/detectors.py --clamd unix:/run/clamav/clamd.ctl

The buffer is a realistic mix of what mail attachments decode to: prose, HTML, base64
text, compressed (random-looking) bytes, and zero runs. The floor is reading the same
bytes once and hashing them with SHA-256: no detector can be cheaper than touching every
byte, so the ratio "floor / detector" says how close to that each one gets. The body
signatures are generated like real ones (8-24 literal bytes, some with ``??``, ``{n-m}``,
``*`` or alternatives), and a few are planted in the buffer so the matcher also does its
verification work; results are checked, so a fast wrong matcher cannot pass.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailguard.scan.detectors.base import ScanObject  # noqa: E402
from mailguard.scan.detectors.clamav_db import ClamavDbDetector  # noqa: E402
from mailguard.scan.detectors.eicar import EicarDetector  # noqa: E402
from mailguard.scan.detectors.heuristics import HeuristicsDetector  # noqa: E402

MIB = 1024 * 1024
# The re engine's cost grows with the signature count; past this it only makes the bench slow.
RE_ENGINE_MAX_SIGNATURES = 100
WORDS = ("the invoice for april is attached please find payment details account meeting report "
         "schedule project update regards thanks quarterly figures review contract signed delivery "
         "customer order shipping team budget proposal draft final version").split()


def make_buffer(size: int, rng: random.Random) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.random()
        if kind < 0.35:
            piece = " ".join(rng.choice(WORDS) for _ in range(rng.randint(200, 2000))).encode()
        elif kind < 0.55:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(100, 800)))
            piece = f"<html><body><p class=\"x\">{text}</p><table><tr><td>1</td></tr></table></body></html>".encode()
        elif kind < 0.75:
            piece = base64.encodebytes(rng.randbytes(rng.randint(8_000, 60_000)))
        elif kind < 0.95:
            piece = rng.randbytes(rng.randint(8_000, 200_000))
        else:
            piece = bytes(rng.randint(1_000, 50_000))
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)[:size]


def make_signatures(count: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """(ndb line, a byte string that matches it) pairs."""
    signatures = []
    for number in range(count):
        head = rng.randbytes(rng.randint(8, 16))
        tail = rng.randbytes(rng.randint(4, 8))
        shape = number % 5
        if shape == 0:
            hexsig, sample = head.hex() + tail.hex(), head + tail
        elif shape == 1:
            hexsig, sample = head.hex() + "????" + tail.hex(), head + b"zz" + tail
        elif shape == 2:
            hexsig, sample = head.hex() + "{2-10}" + tail.hex(), head + b"...." + tail
        elif shape == 3:
            hexsig, sample = head.hex() + "*" + tail.hex(), head + b"any bytes at all" + tail
        else:
            other = rng.randbytes(3)
            hexsig = head.hex() + f"({tail[:3].hex()}|{other.hex()})" + tail[3:].hex()
            sample = head + other + tail[3:]
        signatures.append((f"Bench.Sig-{number}:0:*:{hexsig}", sample))
    return signatures


def timed(function, data: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function(data)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="buffer size in MiB (default 64)")
    parser.add_argument("--signatures", default="10,100,1000", help="body signature counts to try")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--clamd", metavar="ADDRESS", help="also time clamd INSTREAM at this address")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    rng = random.Random(1)
    size = args.size * MIB
    data = make_buffer(size, rng)
    results: list[dict[str, object]] = []

    def record(name: str, seconds: float, note: str = "") -> None:
        results.append({"detector": name, "seconds": round(seconds, 4), "mb_per_s": round(size / MIB / seconds, 1),
                        "note": note})

    floor = timed(lambda d: hashlib.sha256(bytes(memoryview(d))).digest(), data, args.repeat)
    record("floor: read + SHA-256", floor)

    # These two look at a file's first bytes and names only: their time does not depend on its size.
    record("eicar", timed(lambda d: EicarDetector().scan(ScanObject(d, "")), data, args.repeat),
           "reads the first 128 bytes only")
    heuristics = HeuristicsDetector()
    record("heuristics", timed(lambda d: heuristics.scan(ScanObject(d, "", ("report.pdf",))), data, args.repeat),
           "magic bytes, names, zip/OLE directories only")

    with tempfile.TemporaryDirectory() as folder:
        for count in (int(c) for c in args.signatures.split(",")):
            signatures = make_signatures(count, rng)
            database = Path(folder) / f"bench-{count}.ndb"
            database.write_text("\n".join(line for line, _ in signatures) + "\n")
            planted = bytearray(data)
            expected = set()
            for line, sample in signatures[:: max(1, count // 5)]:
                at = rng.randrange(0, size - len(sample))
                planted[at:at + len(sample)] = sample
                expected.add(line.split(":")[0])
            planted_bytes = bytes(planted)
            engines = [("default", None)]
            if count <= RE_ENGINE_MAX_SIGNATURES:
                engines.append(("re only", False))
            for label, use_yara in engines:
                detector = ClamavDbDetector.from_paths([str(database)], use_yara=use_yara)
                found = {f.name for f in detector.scan(ScanObject(planted_bytes, ""))}
                missing = expected - found
                if missing:
                    print(f"bench: matcher missed planted signatures: {sorted(missing)[:5]}", file=sys.stderr)
                    return 1
                seconds = timed(lambda d: detector.scan(ScanObject(d, "")), planted_bytes, args.repeat)
                split = ", ".join(f"{engine} {n}" for engine, n in detector.engines.items() if n)
                record(f"clamav-db, {count} body sigs, {label}", seconds, f"{len(found)} planted found; {split}")

        try:
            from mailguard.scan.detectors.yara_rules import YaraDetector

            rules = Path(folder) / "bench.yar"
            rules.write_text("\n".join(
                f'rule r{n} {{ strings: $a = {{ {rng.randbytes(10).hex(" ")} }} condition: $a }}'
                for n in range(100)))
            yara_detector = YaraDetector.from_paths([str(rules)], timeout=600)
            record("yara, 100 rules", timed(lambda d: yara_detector.scan(ScanObject(d, "")), data, args.repeat))
        except Exception as exc:  # noqa: BLE001 - the extra may be missing; report, do not fail
            print(f"bench: yara skipped: {exc}", file=sys.stderr)

    # Containers: unpacking speed, in MB of output per second (the budget allows it all).
    from mailguard.scan.containers import expand
    from mailguard.scan.limits import Budget
    from mailguard.scan.policy import Policy

    policy = Policy(max_archive_file_size=2 * size, max_object_size=2 * size)
    for label, method in (("stored", zipfile.ZIP_STORED), ("deflate", zipfile.ZIP_DEFLATED)):
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", method) as writer:
            for number in range(0, size, 8 * MIB):
                writer.writestr(f"member-{number // MIB}.bin", data[number:number + 8 * MIB])
        packed = archive.getvalue()
        seconds = timed(lambda d: expand(ScanObject(d, "x"), Budget.for_message(policy), policy), packed,
                        args.repeat)
        record(f"containers: zip ({label}) unpacked", seconds, f"{len(packed) / MIB:.0f} MiB archive")

    # Per object: small mail sends every detector and expand() a few 16 KiB objects per message,
    # so the fixed cost of each call, not MB/s, is what sets messages/s there.
    per_object = _per_object(rng, folder_signatures=signatures_for_small(rng))

    if args.clamd:
        from mailguard.scan.detectors.clamd import ClamdDetector

        clamd = ClamdDetector(args.clamd, timeout=600)
        sample = data[:20 * MIB]  # under clamd's default StreamMaxLength (25 MB)
        seconds = timed(lambda d: clamd.scan(ScanObject(d, "", is_message_root=True)), sample, args.repeat)
        results.append({"detector": "clamd INSTREAM (20 MiB)", "seconds": round(seconds, 4),
                        "mb_per_s": round(20 / seconds, 1), "note": args.clamd})

    for row in results:
        row["floor_ratio"] = round(float(row["mb_per_s"]) / (size / MIB / floor), 3)
    if args.json:
        print(json.dumps({"buffer_mib": args.size, "python": sys.version.split()[0], "cpus": os.cpu_count(),
                          "results": results, "per_object_16k": per_object}, indent=2))
    else:
        print(f"buffer: {args.size} MiB, Python {sys.version.split()[0]}")
        print(f"{'detector':44} {'MB/s':>9} {'x floor':>8}  note")
        for row in results:
            print(f"{row['detector']:44} {row['mb_per_s']:>9} {row['floor_ratio']:>8}  {row['note']}")
        print(f"\nper 16 KiB object (best of {PER_OBJECT_REPEAT} x {PER_OBJECT_CALLS} calls)")
        print(f"{'call':44} {'us/object':>9}")
        for row in per_object:
            print(f"{row['call']:44} {row['us']:>9}")
    return 0


PER_OBJECT_SIZE = 16 * 1024
PER_OBJECT_CALLS = 2000
PER_OBJECT_REPEAT = 5


def signatures_for_small(rng: random.Random) -> list[str]:
    return [line for line, _ in make_signatures(100, rng)]


def _per_object(rng: random.Random, folder_signatures: list[str]) -> list[dict[str, object]]:
    """Microseconds per call on one 16 KiB object that nothing matches (the everyday case)."""
    from mailguard.scan.containers import expand
    from mailguard.scan.limits import Budget
    from mailguard.scan.policy import Policy

    eicar_hex = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".hex()
    data = rng.randbytes(PER_OBJECT_SIZE)
    pdf = b"%PDF-1.4\n" + data[9:]  # the mailbox bench's attachment: a header, nothing to unpack
    policy = Policy()
    rows: list[dict[str, object]] = []

    def per_call(name: str, function, argument) -> None:
        best = float("inf")
        for _ in range(PER_OBJECT_REPEAT):
            started = time.perf_counter()
            for _ in range(PER_OBJECT_CALLS):
                function(argument)
            best = min(best, time.perf_counter() - started)
        rows.append({"call": name, "us": round(best / PER_OBJECT_CALLS * 1e6, 2)})

    per_call("floor: SHA-256", lambda d: hashlib.sha256(d).digest(), data)
    obj = ScanObject(data, "2", ("report.pdf",), "application/pdf")
    per_call("eicar", EicarDetector().scan, obj)
    per_call("heuristics", HeuristicsDetector().scan, obj)
    with tempfile.TemporaryDirectory() as folder:
        for label, lines, use_yara in (
                ("clamav-db, EICAR at offset 0", [f"Bench.EICAR:0:0:{eicar_hex}"], None),
                ("clamav-db, EICAR at offset 0, re only", [f"Bench.EICAR:0:0:{eicar_hex}"], False),
                ("clamav-db, EICAR anywhere", [f"Bench.EICAR:0:*:{eicar_hex}"], None),
                ("clamav-db, 100 floating body sigs", folder_signatures, None)):
            database = Path(folder) / f"{len(rows)}.ndb"
            database.write_text("\n".join(lines) + "\n")
            try:
                detector = ClamavDbDetector.from_paths([str(database)], use_yara=use_yara)
            except Exception as exc:  # noqa: BLE001 - the yara extra may be missing
                print(f"bench: {label} skipped: {exc}", file=sys.stderr)
                continue
            per_call(label, detector.scan, obj)
    per_call("containers: expand, not a container", lambda o: expand(o, Budget.for_message(policy), policy), obj)
    per_call("containers: expand, %PDF- header, no streams",
             lambda o: expand(o, Budget.for_message(policy), policy), ScanObject(pdf, "2", ("report.pdf",)))
    return rows


if __name__ == "__main__":
    sys.exit(main())
