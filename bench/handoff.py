"""The live pool's hand-off to a worker process: one message per round trip against batches.

    .venv/bin/python bench/handoff.py [--messages 2000] [--batch 32]

Small messages (4, 13 and 34 KB, the bulk of real mailboxes) go to one worker process through
``ScanPool.scan`` one at a time, then through ``ScanPool.scan_many`` in batches, in the same run;
the same job runs in this process for the floor. Prints, per message: wall time, the engine's
(this process's) CPU, and the job's own time as the worker measured it, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard.scan.policy import Policy  # noqa: E402
from mailguard.scanpool.job import scan_message  # noqa: E402
from mailguard.scanpool.pool import ScanPool  # noqa: E402


def message(size: int, number: int) -> bytes:
    head = (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: report {number}\r\n"
            f"Message-ID: <{number}@example.org>\r\n\r\n").encode()
    line = b"the quarterly report shows revenue growth in all regions while costs stayed flat\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def one_by_one(pool: ScanPool, items: list[tuple[bytes, str]]) -> list:  # type: ignore[type-arg]
    return [await pool.scan(raw, source) for raw, source in items]


async def batched(pool: ScanPool, items: list[tuple[bytes, str]], batch: int) -> list:  # type: ignore[type-arg]
    outcomes: list = []  # type: ignore[type-arg]
    for at in range(0, len(items), batch):
        outcomes += await pool.scan_many(items[at:at + batch])
    return outcomes


async def measure(kb: int, count: int, batch: int) -> dict[str, float]:
    policy = Policy()
    items = [(message(kb * 1024, n), f"bench {n}") for n in range(count)]
    pool = ScanPool(policy, None, kind="process", workers=1)
    figures: dict[str, float] = {}
    try:
        await pool.scan(*items[0])  # the worker starts and builds its engine
        for name, run in (("one", lambda: one_by_one(pool, items)), ("batch", lambda: batched(pool, items, batch))):
            wall, cpu = time.perf_counter(), time.process_time()
            outcomes = await run()
            figures[f"{name}_wall_us"] = (time.perf_counter() - wall) / count * 1e6
            figures[f"{name}_engine_cpu_us"] = (time.process_time() - cpu) / count * 1e6
            figures[f"{name}_job_us"] = sum(o.seconds for o in outcomes) / count * 1e6
            assert all(o.status == "clean" for o in outcomes)
    finally:
        await pool.aclose()
    started = time.perf_counter()
    for raw, source in items:
        scan_message(raw, source, policy, None)
    figures["in_process_us"] = (time.perf_counter() - started) / count * 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    for kb in (4, 13, 34):
        f = asyncio.run(measure(kb, args.messages, args.batch))
        print(f"{kb:>3} KB  one by one: {f['one_wall_us']:6.0f} us wall, {f['one_engine_cpu_us']:5.0f} us engine CPU"
              f"  | batches of {args.batch}: {f['batch_wall_us']:6.0f} us wall, {f['batch_engine_cpu_us']:5.0f} us engine CPU"
              f"  | job {f['one_job_us']:.0f} us in the worker, {f['in_process_us']:.0f} us here"
              f"  | batch/one: wall {f['batch_wall_us'] / f['one_wall_us']:.2f},"
              f" engine CPU {f['batch_engine_cpu_us'] / f['one_engine_cpu_us']:.2f}")


if __name__ == "__main__":
    main()
