"""Fuzz the POP3 proxy machine: structure-aware sessions, both directions, random splits, and a
differential check against poplib (tests/protocols/pop3_fuzz.py says what is checked).

    .venv/bin/python bench/fuzz_pop3.py [--seed 1] [--count 1000000] [--report-every 100000]

Deterministic: input i of seed S is always the same session, so a failure is replayed with
``--seed S --first i --count 1``. Prints the inputs run, the time taken, and the crashes
(any exception but the project's protocol errors), hangs and rule breaks found, each with the
input that showed it; exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.protocols.pop3_fuzz import HANG_SECONDS, FuzzFailure, fuzz_one  # noqa: E402


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """A hang inside one event (the fuzzer bounds the events) becomes a FuzzFailure. Here, not
    in the fuzzer: under pytest the alarm is pytest-timeout's."""
    def expired(*_: object) -> None:
        raise FuzzFailure(f"hang: no result within {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def input_seed(seed: int, index: int) -> int:
    return (seed << 32) + index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--first", type=int, default=0, help="index of the first input")
    parser.add_argument("--report-every", type=int, default=100_000)
    args = parser.parse_args()

    kinds: Counter[str] = Counter()
    examples: dict[str, tuple[int, str]] = {}
    start = time.perf_counter()
    for index in range(args.first, args.first + args.count):
        try:
            with deadline(HANG_SECONDS):
                fuzz_one(input_seed(args.seed, index))
        except FuzzFailure as exc:
            kind = "hang" if str(exc).startswith("hang") else "rule broken: " + str(exc).split(":")[0]
            kinds[kind] += 1
            examples.setdefault(kind, (index, str(exc)[:2000]))
        except Exception:  # noqa: BLE001 - a crash is what we look for
            text = traceback.format_exc()
            kind = "crash: " + text.strip().splitlines()[-1][:120]
            kinds[kind] += 1
            examples.setdefault(kind, (index, text[-3000:]))
        done = index - args.first + 1
        if args.report_every and done % args.report_every == 0:
            print(f"{done} inputs, {time.perf_counter() - start:.0f}s, {sum(kinds.values())} failures",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    crashes = sum(n for k, n in kinds.items() if k.startswith("crash"))
    print(f"seed {args.seed}: {args.count} inputs in {elapsed:.1f}s ({args.count / elapsed:.0f}/s); "
          f"crashes {crashes}, hangs {kinds['hang']}, rules broken "
          f"{sum(kinds.values()) - crashes - kinds['hang']}")
    for kind, count in kinds.most_common():
        index, text = examples[kind]
        print(f"\n{count} x {kind}\nfirst at --seed {args.seed} --first {index} --count 1:\n{text}")
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
