"""The CPU one TLS leg costs the engine to receive a bulk transfer, by read buffer, in one run.

    .venv/bin/python bench/tls_bulk.py [--megabytes 300] [--rounds 9]

A sender process (plain ``ssl`` sockets, so its work is not counted) sends ``--megabytes`` over
TLS on 127.0.0.1 to a ``Conn`` in this process; this process's CPU time from connect to the end
of the stream is the figure, in seconds per GB. Three read buffers, in rotating order, medians
over the rounds:

- ``fixed 16 KiB``: a buffer of one record per connection (what ``fit_tls_buffer`` did before);
- ``shared``: ``fit_tls_buffer`` as it is (one ``TLS_READ_BUFFER`` for all connections of a thread);
- ``asyncio``: the stock TLS layer (256 KiB per connection, which bench/load.py counts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard.proxy import conn as conn_module  # noqa: E402
from mailguard.proxy.conn import TLS_RECORD, Conn  # noqa: E402

SENDER = """
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
connection, _ = listener.accept()
tls = context.wrap_socket(connection, server_side=True)
chunk = b"x" * (1 << 20)
for _ in range(int(sys.argv[3])):
    tls.sendall(chunk)
tls.close()
"""


def _fixed(transport: asyncio.BaseTransport) -> None:
    protocol = getattr(transport, "_ssl_protocol", None)
    if protocol is not None:
        protocol.max_size = TLS_RECORD
        protocol._ssl_buffer = bytearray(TLS_RECORD)
        protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)


VARIANTS = {"fixed 16 KiB": _fixed, "shared": conn_module.fit_tls_buffer, "asyncio": lambda transport: None}


async def receive(variant: str, cert: Path, key: Path, client: ssl.SSLContext, megabytes: int) -> float:
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(cert), str(key), str(megabytes)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    port = int(sender.stdout.readline())
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    received = 0

    def on_connect(conn: Conn) -> None:
        def sink(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if not data and not done.done():
                done.set_result(received)
        conn.attach(sink)

    original = conn_module.fit_tls_buffer
    conn_module.fit_tls_buffer = VARIANTS[variant]  # type: ignore[assignment]
    try:
        start = time.process_time()
        _, conn = await loop.create_connection(lambda: Conn(on_connect), "127.0.0.1", port, ssl=client,
                                               server_hostname="localhost")
        total = await asyncio.wait_for(done, 300)
        cpu = time.process_time() - start
    finally:
        conn_module.fit_tls_buffer = original
    conn.close()
    sender.wait()
    assert total == megabytes << 20, total
    return cpu * 1024 / megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        names = list(VARIANTS)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                figures[name].append(asyncio.run(receive(name, cert, key, client, args.megabytes)))
    print(f"receiving {args.megabytes} MB over TLS, CPU of the receiving process, median of {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    baseline = statistics.median(figures["fixed 16 KiB"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:13} {median:5.2f} s/GB  ({median / baseline:.2f}x fixed 16 KiB)")


if __name__ == "__main__":
    main()
