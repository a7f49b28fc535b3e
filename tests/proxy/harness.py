"""Running a FilterServer in front of a loopback server inside a test, and talking to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mailguard.proxy.server import FilterServer
from mailguard.settings import Settings, resolve_paths
from tests.peers import free_port, free_ports  # noqa: F401 - re-exported for the tests and benches

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EC = "web-and-email.email-client."


def clean_message(n: int, body_lines: int = 20) -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (i, n) for i in range(body_lines))
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: clean %d\r\n"
            b"Message-ID: <c%d@example.org>\r\n\r\n.leading dot\r\n" % (n, n)) + body


def infected_message(n: int) -> bytes:
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: infected %d\r\n"
            b"Message-ID: <i%d@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--XX\r\nContent-Type: application/octet-stream; name=eicar.com\r\n"
            b"Content-Disposition: attachment; filename=eicar.com\r\n\r\n" % (n, n)) + EICAR + b"\r\n--XX--\r\n"


@contextlib.asynccontextmanager
async def filter_server(
    upstream_port: int, *, values: dict[str, Any] | None = None, idle_timeout: float = 30.0,
    pool_kind: str = "thread", grace: float = 2.0,
) -> AsyncIterator[tuple[FilterServer, int]]:
    """A FilterServer with one route 127.0.0.1:<free port> -> 127.0.0.1:<upstream_port>."""
    port = free_port()
    settings = Settings.from_values({
        "web-and-email.protocol-filtering.routes": [f"127.0.0.1:{port}=127.0.0.1:{upstream_port}"],
        **(values or {}),
    })
    server = FilterServer(settings, resolve_paths(), pool_kind=pool_kind, pool_workers=2,
                          idle_timeout=idle_timeout)
    await server.start()
    try:
        yield server, port
    finally:
        await server.stop(grace)


def run(coro: Any, timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class TlsWorld:
    """An upstream CA (trustme) trusted by the engine, and the engine's own CA trusted by clients."""

    def __init__(self, tmp_path: Any) -> None:
        import ssl

        import trustme

        from mailguard.tls.castore import CAStore

        self.upstream_ca = trustme.CA()
        self.upstream_ca_file = tmp_path / "upstream-ca.pem"
        self.upstream_ca.cert_pem.write_to_path(str(self.upstream_ca_file))
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.upstream_ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.server_context)
        stored = CAStore(resolve_paths().state_dir).init()
        self.client_context = ssl.create_default_context(cafile=str(stored.cert_path))
        self.values = {"web-and-email.ssl-tls.trusted-ca-file": str(self.upstream_ca_file)}
