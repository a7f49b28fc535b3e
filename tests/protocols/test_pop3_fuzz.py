"""The POP3 machine fuzzer (pop3_fuzz.py) on a fixed seed: a quick run of what bench/fuzz_pop3.py
runs a million times. No crash, no hang, the same output whole and cut, and poplib never hands
its caller a message the scanner did not see."""

from __future__ import annotations

from tests.protocols.pop3_fuzz import fuzz_one

SEED = 20261207
INPUTS = 1000


def test_fixed_seed_sessions_keep_every_rule() -> None:
    for index in range(INPUTS):
        fuzz_one((SEED << 32) + index)
