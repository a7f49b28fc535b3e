"""A scan worker process: messages in on stdin, outcomes out on stdout.

Started by ``procs.WorkerProcess`` as ``python -m mailguard.scanpool.worker``. Why not
``concurrent.futures.ProcessPoolExecutor``: handing a 100 KB message to it and back took
~0.56 ms (a feeder thread pickles it, a result thread unpickles the answer, each wake-up
contends for the engine's GIL), more than scanning the message. Here the engine writes the
message's bytes once into a pipe, and reads back a small pickled outcome.

Frames (all lengths big-endian):
- first, parent -> worker: ``u32 n`` + pickle of ``(policy, quarantine_dir)``;
- parent -> worker, per message: ``u32 source_length, u64 message_length`` + source (UTF-8)
  + message bytes;
- worker -> parent, per message: ``u32 n`` + pickle of the ``ScanOutcome``.

The worker ends when its stdin closes (the engine stopped or died) and asks the kernel to kill it
when its parent dies, so no worker outlives the engine.
"""

from __future__ import annotations

import pickle
import signal
import struct
import sys
from typing import BinaryIO

from mailguard.processes import die_with_parent

__all__ = ["CONFIG", "REQUEST", "RESULT", "main"]

CONFIG = struct.Struct("!I")
REQUEST = struct.Struct("!IQ")
RESULT = struct.Struct("!I")

def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) != size:
        return None  # end of input: the engine closed our stdin
    return data


def main() -> int:
    die_with_parent()  # elsewhere than Linux, stdin's end-of-file still stops it with the engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the engine, which stops us
    from mailguard.scanpool.job import scan_message, settle_without_scan
    from mailguard.scan.verdict import Reason

    requests, results = sys.stdin.buffer, sys.stdout.buffer
    head = _read_exactly(requests, CONFIG.size)
    if head is None:
        return 0
    config = _read_exactly(requests, CONFIG.unpack(head)[0])
    if config is None:
        return 0
    policy, quarantine_dir = pickle.loads(config)
    while (head := _read_exactly(requests, REQUEST.size)) is not None:
        source_length, message_length = REQUEST.unpack(head)
        source = _read_exactly(requests, source_length)
        message = _read_exactly(requests, message_length)
        if source is None or message is None:
            return 0
        name = source.decode("utf-8", "replace")
        try:
            outcome = scan_message(message, name, policy, quarantine_dir)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: unscanned (docs/architecture.md#fail-closed)
            outcome = settle_without_scan(message, Reason.ENGINE_ERROR, f"{type(exc).__name__}: {exc}",
                                          policy, quarantine_dir, name)
        payload = pickle.dumps(outcome.for_session(), protocol=pickle.HIGHEST_PROTOCOL)
        results.write(RESULT.pack(len(payload)) + payload)
        results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
