"""The POP3 machine fuzzer (pop3_fuzz.py) on a fixed seed: a quick run of what bench/fuzz_pop3.py
runs a million times. No crash, no hang, the same output whole and cut, and poplib never hands
its caller a message the scanner did not see."""

from __future__ import annotations

import signal

from tests.protocols.pop3_fuzz import fuzz_one

SEED = 20261207
INPUTS = 1000


def test_fixed_seed_sessions_keep_every_rule() -> None:
    for index in range(INPUTS):
        fuzz_one((SEED << 32) + index)


def test_the_fuzzer_leaves_the_callers_alarm_alone() -> None:
    # pytest-timeout (signal method) arms SIGALRM for the whole test; the fuzzer must not cancel it
    def handler(*_: object) -> None:
        raise AssertionError("alarm")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 3600)
    try:
        fuzz_one(SEED << 32)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
        assert signal.getsignal(signal.SIGALRM) is handler
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
