"""The engine's TLS material and its connections to real servers.

``TlsKit`` holds, per settings version, the client-facing leaf factory (``ClientFacingTLS``, from
the install's CA) and the upstream context with its certificate-validity judgement
(``UpstreamTLS``). ``connect_upstream`` opens the server leg: TCP_NODELAY, the transparent-mode
socket mark (so the redirect rules let our own connection through), and implicit TLS verified
per policy. ``upgrade_upstream`` does the same verification for STLS.

Transparent mode knows a plaintext port's server only by its IP address, and certificates of real
providers name hosts, not addresses: verifying against the IP would refuse every one of them, and
accepting an IP match is not the check the client asked for. Such a server leg is marked with
``require_client_name``: a later STLS/STARTTLS waits for the client's and is verified against
the name the client asks for in its handshake (``upgrade_upstream(..., named_by_client=True)``);
any other upgrade of it is refused (``UpstreamRefused``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailguard.errors import MailguardError
from mailguard.proxy.conn import Conn

if TYPE_CHECKING:
    from mailguard.proxy.runconfig import RunConfig
    from mailguard.tls.contexts import ClientFacingTLS
    from mailguard.tls.upstream import UpstreamTLS

__all__ = ["CONNECT_TIMEOUT", "TlsKit", "UpstreamRefused", "connect_upstream", "needs_client_name",
           "require_client_name", "upgrade_upstream"]

log = logging.getLogger("mailguard.proxy")

CONNECT_TIMEOUT = 30.0
TLS_HANDSHAKE_TIMEOUT = 30.0


class UpstreamRefused(MailguardError):
    """The server leg could not be opened, or its certificate is refused by policy."""


@dataclass
class TlsKit:
    client_facing: "ClientFacingTLS | None"   # None: no CA, TLS cannot be intercepted
    upstream: "UpstreamTLS"
    problem: str = ""                         # why client_facing is None

    @classmethod
    def from_config(cls, config: "RunConfig", state_dir: Path | None) -> "TlsKit":
        from mailguard.tls.upstream import UpstreamTLS

        upstream = UpstreamTLS.from_settings(config.settings, state_dir)
        client_facing = None
        problem = ""
        if config.ssl_enabled and state_dir is not None:
            from mailguard.tls.contexts import ClientFacingTLS

            try:
                client_facing = ClientFacingTLS.from_state(state_dir, config.settings)
            except MailguardError as exc:
                problem = str(exc)
                log.warning("TLS is relayed unscanned: %s", exc)
        return cls(client_facing, upstream, problem)

    @property
    def can_intercept(self) -> bool:
        return self.client_facing is not None

    def client_context(self, names: list[str], upstream_cert_der: bytes | None) -> ssl.SSLContext:
        assert self.client_facing is not None
        return self.client_facing.context(names, upstream_cert_der)


def _judge(kit: TlsKit, hostname: str, conn: Conn | None, error: BaseException | None) -> None:
    try:
        check = kit.upstream.judge(hostname, ssl_object=conn.ssl_object() if conn else None, error=error)
    except ssl.SSLError as exc:
        raise UpstreamRefused(f"TLS with {hostname} failed: {exc}") from exc
    if not check.allowed:
        raise UpstreamRefused(f"upstream certificate of {hostname} refused: {check.summary}"
                              + (f" ({check.detail})" if check.detail else ""))
    if check.problems:
        log.warning("upstream certificate of %s accepted by policy despite: %s", hostname, check.summary)
        if conn is not None:
            conn.certificate_problems = tuple(problem.value for problem in check.problems)  # "wrong-host"


async def connect_upstream(
    host: str, port: int, *, tls: TlsKit | None = None, mark: bool = False,
) -> Conn:
    """Open the server leg (implicit TLS when ``tls`` is given); ``UpstreamRefused`` on failure."""
    loop = asyncio.get_running_loop()
    sock = None
    try:
        if mark:
            from mailguard.transparent.netfilter import create_upstream_socket

            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            sock = create_upstream_socket(family)
            await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
        kwargs: dict = {"sock": sock} if sock is not None else {"host": host, "port": port}
        if tls is not None:
            kwargs.update(ssl=tls.upstream.context, server_hostname=host,
                          ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        _, conn = await asyncio.wait_for(loop.create_connection(Conn, **kwargs), CONNECT_TIMEOUT)
    except ssl.SSLCertVerificationError as exc:
        if sock is not None:
            sock.close()
        assert tls is not None
        _judge(tls, host, None, exc)
        raise UpstreamRefused(f"upstream certificate of {host} refused: {exc}") from exc
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        if sock is not None:
            sock.close()
        raise UpstreamRefused(f"cannot reach {host}:{port}: {exc or type(exc).__name__}") from exc
    if tls is not None:
        try:
            _judge(tls, host, conn, None)
        except UpstreamRefused:
            conn.abort()
            raise
    return conn


def require_client_name(conn: Conn, reason: str) -> None:
    """``conn``'s server is known by address only: ``upgrade_upstream`` verifies it against a
    name the client gave (SNI), and is refused with ``reason`` otherwise."""
    conn.client_name_only = reason


def needs_client_name(conn: Conn) -> bool:
    return conn.client_name_only is not None


async def upgrade_upstream(conn: Conn, host: str, tls: TlsKit, *, named_by_client: bool = False) -> None:
    """STLS on the server leg, verified like implicit TLS; ``host`` is the name to verify
    against, ``named_by_client`` when it is the client's SNI (see ``require_client_name``)."""
    reason = conn.client_name_only
    if reason is not None and not named_by_client:
        raise UpstreamRefused(reason)
    try:
        await conn.start_tls(tls.upstream.context, server_side=False, server_hostname=host,
                             timeout=TLS_HANDSHAKE_TIMEOUT)
    except ssl.SSLCertVerificationError as exc:
        _judge(tls, host, None, exc)
        raise UpstreamRefused(f"upstream certificate of {host} refused: {exc}") from exc
    except (OSError, ConnectionError, asyncio.TimeoutError, ssl.SSLError) as exc:
        raise UpstreamRefused(f"TLS with {host} failed: {exc or type(exc).__name__}") from exc
    _judge(tls, host, conn, None)


def upstream_certificate(conn: Conn) -> bytes | None:
    """The server's certificate, for the names of our leaf; None when it failed a check, so a
    certificate the policy merely tolerated never decides what our CA vouches for
    (docs/pitfalls.md#verifying-the-server)."""
    ssl_object = conn.ssl_object()
    if ssl_object is None or conn.certificate_problems:
        return None
    return ssl_object.getpeercert(binary_form=True)
