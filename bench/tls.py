"""Leaf minting (cold, memory cache, disk cache) and TLS handshakes per second through the
client-facing context against a plain ``ssl`` server with a fixed certificate, in one run.

    .venv/bin/python bench/tls.py [--leaves 200] [--handshakes 300] [--rounds 3]

Everything runs on 127.0.0.1 in one process (server in a thread), so read the handshake
figures as a ratio between the two servers, not as absolutes. Handshakes are full TLS 1.3
handshakes (no session resumption), sequential, with a fresh connection each; the two servers
are measured in short rounds, in rotating order, so machine noise hits all alike; medians
are reported.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard.tls.castore import CAStore  # noqa: E402
from mailguard.tls.contexts import ClientFacingTLS, server_context  # noqa: E402
from mailguard.tls.leaf import LeafMinter  # noqa: E402


def per_call(function: Callable[[int], object], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        function(index)
    return (time.perf_counter() - start) / count


def minting(state: Path, key_type: str, leaves: int) -> dict[str, float]:
    store = CAStore(state / key_type)
    stored = store.init(key_type=key_type)
    minter = LeafMinter(stored.ca, stored.leaves_dir)
    names = [[f"imap{index}.example.com"] for index in range(leaves)]
    cold = per_call(lambda i: minter.leaf_for(names[i]), leaves)
    memory = per_call(lambda i: minter.leaf_for(names[i % leaves]), leaves * 10)
    restarted = LeafMinter(store.active().ca, stored.leaves_dir)
    disk = per_call(lambda i: restarted.leaf_for(names[i]), leaves)
    assert minter.stats["minted"] == leaves and restarted.stats["disk"] == leaves
    return {"cold": cold, "memory": memory, "disk": disk}


class Server:
    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = self.listener.getsockname()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"+OK\r\n")
            except (ssl.SSLError, OSError):
                pass
            finally:
                raw.close()

    def close(self) -> None:
        self.listener.close()


def handshakes_per_second(client: ssl.SSLContext, server: Server, count: int, name: Callable[[int], str]) -> float:
    start = time.perf_counter()
    for index in range(count):
        with socket.create_connection(server.address) as raw:
            with client.wrap_socket(raw, server_hostname=name(index)) as tls:
                tls.recv(5)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=200)
    parser.add_argument("--handshakes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="mailguard-bench-tls-"))
    atexit.register(shutil.rmtree, state, ignore_errors=True)

    print(f"leaf minting, {args.leaves} names, per leaf_for() call:")
    for key_type in ("ec", "rsa"):
        figures = minting(state, key_type, args.leaves)
        print(f"  CA {key_type:3}  cold {figures['cold'] * 1e3:7.3f} ms   memory cache {figures['memory'] * 1e6:7.1f} µs"
              f"   disk cache {figures['disk'] * 1e3:7.3f} ms")

    stored = CAStore(state / "ec").active()
    tls = ClientFacingTLS(LeafMinter(stored.ca, stored.leaves_dir))
    fixed_leaf = tls.minter.leaf_for(["imap.example.com"])
    plain = server_context()
    plain.load_cert_chain(fixed_leaf.path)
    servers = {
        "plain ssl, fixed certificate": Server(plain),
        "client-facing, cached leaf": Server(tls.context(["imap.example.com"])),
        "client-facing, new name each (mint)": Server(tls.context(["imap.example.com"])),
    }
    names: dict[str, Callable[[int], str]] = {
        "plain ssl, fixed certificate": lambda i: "imap.example.com",
        "client-facing, cached leaf": lambda i: "imap.example.com",
    }
    counter = iter(range(10**9))
    names["client-facing, new name each (mint)"] = lambda i: f"new{next(counter)}.example.com"
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=str(stored.cert_path))
    client.check_hostname = False  # the fixed certificate does not name "newN": the rate is the point
    results: dict[str, list[float]] = {label: [] for label in servers}
    order = list(servers)
    for round_number in range(args.rounds):
        # Rotate who goes first: the first server of a round tends to see a quieter machine.
        shift = round_number % len(order)
        for label in order[shift:] + order[:shift]:
            results[label].append(handshakes_per_second(client, servers[label], args.handshakes, names[label]))
    for server in servers.values():
        server.close()
    print(f"TLS handshakes/s ({ssl.OPENSSL_VERSION}, median of {args.rounds} rounds of {args.handshakes}):")
    base = statistics.median(results["plain ssl, fixed certificate"])
    for label, rates in results.items():
        rate = statistics.median(rates)
        print(f"  {label:38} {rate:8.0f}/s   {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
