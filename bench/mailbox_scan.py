"""Benchmark: ``mailguard scan`` over one big generated mbox, against clamscan and the I/O floor.

    .venv/bin/python bench/mailbox_scan.py                 # 1 GiB mbox, then 50 MB vs 5 GB memory
    .venv/bin/python bench/mailbox_scan.py --size-mb 100 --no-memory   # a quick run
    .venv/bin/python bench/mailbox_scan.py --compare-tree /tmp/before  # also an earlier tree, same run

Measured, each as a child process so its peak memory (ru_maxrss from wait4, which covers its
reaped worker processes too) is its own:

- floor: read the file and SHA-256 it (what any scanner must at least do);
- mailguard scan --jobs 1 and --jobs 2 (report only, jsonl to /dev/null);
- Debian's clamscan with the same signature (EICAR, as .ndb body signature, in a temp
  database folder) and ``--scan-mail`` over the same file, its per-container file limit
  raised so it looks at every message (at the default 10,000 it stops after ~5,000 messages
  of a 1 GB mbox and reports a tenth of the detections);
- the mailbox layer alone (the engine replaced by a no-op), --jobs 1 and 2;
- with ``--compare-tree DIR``: mailguard and the mailbox layer again from another source tree
  (e.g. ``git archive`` of an earlier commit), so before/after figures share one run;
- the goal's ratio (``--jobs 2`` time over floor time) in ``--pairs`` back-to-back pairs, and
  their median: on a shared machine one floor run can be 30% off, and a ratio taken from a
  pair run seconds apart is far steadier than one from runs minutes apart.

The file is generated into bench/out/ (git-ignored). ``--mix`` says what it holds:

- ``uniform`` (the default): 22 KB messages, each with a base64 PDF-like attachment of 16 KB
  (``--attachment-kb``), one in ``INFECTED_EVERY`` carrying EICAR as an attachment. Per-message
  work sets the pace: the hardest case for the floor ratio.
- ``everyday``: bench/scan.py's small everyday mail (1-30 KB: text, text+HTML alternatives,
  a small attachment), about 1% infected (EICAR attached, or zipped).
- ``attachments``: bench/scan.py's mix with big attachments (10 KB-10 MB, some zipped), 1% infected.

The mixes from bench/scan.py are stored as an mbox is: LF line ends, a ``From `` line each.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
INFECTED_EVERY = 100
FROM_LINE = b"From bench@example.org Mon Jan  1 00:00:00 2024\n"


def _message(number: int, attachment: bytes, name: str) -> bytes:
    encoded = base64.encodebytes(attachment)
    return (
        f"From: Bench <bench@example.org>\nTo: you@example.org\nSubject: report {number}\n"
        f"Message-ID: <{number}@bench.example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        f"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b{number}\"\n\n"
        f"--b{number}\nContent-Type: text/plain; charset=utf-8\n\nHello,\nthe report is attached.\n\n"
        f"--b{number}\nContent-Type: application/octet-stream; name=\"{name}\"\n"
        f"Content-Disposition: attachment; filename=\"{name}\"\nContent-Transfer-Encoding: base64\n\n"
    ).encode() + encoded + f"\n--b{number}--\n".encode()


MIXES = ("uniform", "everyday", "attachments")


def generate(path: Path, size: int, mix: str = "uniform", attachment_kb: int = 16) -> int:
    """Write an mbox of at least ``size`` bytes; returns the number of infected messages."""
    if path.exists() and path.stat().st_size >= size:
        return _count_infected(path)
    if mix != "uniform":
        return _generate_from_corpus_mix(path, size, mix)
    rng_block = hashlib.sha256(b"seed").digest() * (32 * attachment_kb)  # incompressible-looking bytes
    infected = 0
    written = 0
    number = 0
    with open(path, "wb") as stream:
        while written < size:
            if number % INFECTED_EVERY == INFECTED_EVERY - 1:
                raw = _message(number, EICAR, "eicar.com")
                infected += 1
            else:
                raw = _message(number, b"%PDF-1.4\n" + rng_block[number % 64:], "report.pdf")
            chunk = FROM_LINE + raw + b"\n"
            stream.write(chunk)
            written += len(chunk)
            number += 1
    (path.with_suffix(".json")).write_text(json.dumps({"infected": infected, "messages": number}))
    return infected


def _generate_from_corpus_mix(path: Path, size: int, mix: str) -> int:
    import random
    import re

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import scan as corpus  # bench/scan.py: its message makers

    make = corpus._small_message if mix == "everyday" else corpus._message
    rng = random.Random(1)
    infected = written = number = 0
    with open(path, "wb") as stream:
        while written < size:
            is_infected = rng.random() < 0.01
            raw = make(rng, number, is_infected).replace(b"\r\n", b"\n")
            raw = re.sub(rb"(?m)^(>*From )", rb">\1", raw)  # mboxrd quoting (none is expected)
            chunk = FROM_LINE + raw + (b"\n" if raw.endswith(b"\n") else b"\n\n")
            stream.write(chunk)
            written += len(chunk)
            infected += is_infected
            number += 1
    (path.with_suffix(".json")).write_text(json.dumps({"infected": infected, "messages": number}))
    return infected


def _generate_apart(path: Path, size: int, mix: str = "uniform", attachment_kb: int = 16) -> int:
    """``generate`` in a child process: building big messages would grow this process, and a
    child forked from it starts with that resident size counted in its own peak (ru_maxrss)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(generate, (path, size, mix, attachment_kb))


def _count_infected(path: Path) -> int:
    return json.loads(path.with_suffix(".json").read_text())["infected"]


def measure(argv: list[str], *, env: dict[str, str] | None = None, tree: Path = ROOT) -> dict[str, object]:
    """Run ``argv`` in ``tree`` (whose mailguard package it imports); wall time, peak RSS (MiB) of it
    and its reaped children, exit code, stdout."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(tree))
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tree)
    stdout = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "exit": process.returncode, "stdout": stdout}


def floor(path: Path) -> dict[str, object]:
    code = ("import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb',buffering=0)\n"
            "while b:=f.read(1<<20): h.update(b)\nprint(h.hexdigest())")
    return measure([sys.executable, "-c", code, str(path)])


def mailguard(path: Path, jobs: int, home: str, tree: Path = ROOT) -> dict[str, object]:
    env = dict(os.environ, MAILGUARD_HOME=home)
    result = measure([sys.executable, "-m", "mailguard", "scan", "--jobs", str(jobs), "--format", "jsonl",
                      "--quiet", str(path)], env=env, tree=tree)
    lines = result["stdout"].splitlines()
    result["detections"] = json.loads(lines[-1])["summary"]["infected"] if lines else None
    result["messages"] = json.loads(lines[-1])["summary"]["messages"] if lines else None
    return result


def mailbox_layer_only(path: Path, jobs: int, tree: Path = ROOT) -> dict[str, object]:
    """The reading, splitting and result plumbing alone: the engine is replaced by a no-op.

    Not a product configuration: it shows how much of the time is the mailbox layer's.
    """
    code = (
        "import sys\nfrom mailguard.mailbox.offline import OfflineScan\nfrom mailguard.scan.policy import Policy\n"
        "from mailguard.scan.verdict import Verdict\n"
        "class NoOp:\n def __init__(self, policy): pass\n def scan(self, raw): return Verdict.build([], [])\n"
        " def apply(self, raw, verdict): return raw\n def close(self): pass\n"
        "with OfflineScan([sys.argv[1]], Policy(), jobs=int(sys.argv[2]), engine_factory=NoOp) as run:\n"
        " n = sum(1 for _ in run.results())\nprint(n)")
    return measure([sys.executable, "-c", code, str(path), str(jobs)], tree=tree)


def clamscan(path: Path) -> dict[str, object] | None:
    binary = shutil.which("clamscan")
    if binary is None:
        return None
    with tempfile.TemporaryDirectory() as database:
        # Same signature as mailguard's built-in one: the EICAR string anywhere in a scanned object.
        Path(database, "eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
        # --allmatch: do not stop at the first detection in the file (mailguard scans every message);
        # the size limits raised to their maximum, or clamscan skips a 1 GB file as "OK" at once.
        result = measure([binary, "--no-summary", "--infected", "--allmatch", "--scan-mail=yes",
                          "--max-filesize=4000M", "--max-scansize=4000M", "--max-files=100000000",
                          "-d", database, str(path)])
    result["detections"] = result["stdout"].count(b"FOUND")
    return result


def _row(name: str, result: dict[str, object], size: int, messages: int) -> dict[str, object]:
    seconds = float(result["seconds"])
    return {"name": name, "seconds": round(seconds, 2), "MB/s": round(size / 1e6 / seconds, 1),
            "messages/s": round(messages / seconds), "peak MiB": round(float(result["peak_mib"]), 1),
            "detections": result.get("detections", "-"), "exit": result["exit"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the throughput mbox (MiB)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare peak memory on a 50 MB and a 5 GB mbox")
    parser.add_argument("--big-mb", type=int, default=5120, help="size of the big mbox for the memory check")
    parser.add_argument("--compare-tree", help="also run mailguard from this source tree (before/after)")
    parser.add_argument("--mix", choices=MIXES, default="uniform", help="what the mbox holds (see above)")
    parser.add_argument("--attachment-kb", type=int, default=16,
                        help="uniform mix: the attachment's size, to see where per-message work stops setting the pace")
    parser.add_argument("--pairs", type=int, default=5, help="floor / --jobs 2 pairs for the goal's ratio")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="mailguard-bench-home-")
    suffix = f"-{args.mix}" if args.mix != "uniform" else f"-{args.attachment_kb}kb" if args.attachment_kb != 16 else ""
    path = OUT / f"bench-{args.size_mb}{suffix}.mbox"
    infected = _generate_apart(path, args.size_mb << 20, args.mix, args.attachment_kb)
    size = path.stat().st_size
    messages = json.loads(path.with_suffix(".json").read_text())["messages"]
    print(f"# {path.name}: {size / 1e6:.0f} MB, {messages} messages, {infected} infected", flush=True)
    rows = {"floor": _row("floor (read + SHA-256)", floor(path), size, messages)}
    print(json.dumps(rows["floor"]), flush=True)
    trees = [("", ROOT)] + ([(" [compare tree]", Path(args.compare_tree).resolve())] if args.compare_tree else [])
    runs: list[tuple[str, object]] = []
    for label, tree in trees:
        for jobs in (1, 2):
            runs.append((f"mailguard --jobs {jobs}{label}", lambda j=jobs, t=tree: mailguard(path, j, home, t)))
    runs.append(("clamscan --scan-mail --allmatch (same signature)", lambda: clamscan(path)))
    for label, tree in trees:
        for jobs in (1, 2):
            runs.append((f"mailbox layer only, no-op engine, --jobs {jobs}{label}",
                         lambda j=jobs, t=tree: mailbox_layer_only(path, j, t)))
    for name, run in runs:
        result = run()
        if result is None:
            print(json.dumps({"name": name, "missing": True}), flush=True)
            continue
        rows[name] = _row(name, result, size, messages)
        print(json.dumps(rows[name]), flush=True)
    best = rows["mailguard --jobs 2"]["MB/s"]
    clam = rows.get("clamscan --scan-mail --allmatch (same signature)")
    print(f"# mailguard --jobs 2 vs floor: {rows['floor']['MB/s'] / best:.2f}x slower; "
          + (f"vs clamscan: {best / clam['MB/s']:.2f}x its throughput" if clam else "clamscan missing"), flush=True)
    ratios = []
    for _ in range(args.pairs):
        pair_floor = float(floor(path)["seconds"])
        ratios.append(float(mailguard(path, 2, home)["seconds"]) / pair_floor)
        print(json.dumps({"pair": len(ratios), "floor MB/s": round(size / 1e6 / pair_floor, 1),
                          "--jobs 2 / floor": round(ratios[-1], 2)}), flush=True)
    if ratios:
        print(f"# --jobs 2 vs floor over {len(ratios)} pairs: median {statistics.median(ratios):.2f}x slower "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    if args.memory:
        for size_mb in (50, args.big_mb):
            memory_path = OUT / f"bench-{size_mb}.mbox"
            _generate_apart(memory_path, size_mb << 20)
            result = mailguard(memory_path, 1, home)
            print(json.dumps({"memory check": f"{size_mb} MiB mbox, --jobs 1",
                              "peak MiB": round(float(result["peak_mib"]), 1),
                              "seconds": round(float(result["seconds"]), 1)}), flush=True)
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
