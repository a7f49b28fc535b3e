"""Loopback TLS servers and certificate makers shared by the tls tests."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import trustme

GREETING = b"* OK ready\r\n"


class TLSServer:
    """A thread accepting TLS connections on 127.0.0.1 and sending GREETING on each.

    Handshake failures on the server side are expected in negative tests and recorded, not
    raised; ``handshakes`` counts the completed ones.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.address = self.listener.getsockname()
        self.handshakes = 0
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-test-server", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    self.handshakes += 1
                    tls.sendall(GREETING)
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(exc)
            finally:
                raw.close()

    def __enter__(self) -> "TLSServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@contextlib.contextmanager
def serving(context: ssl.SSLContext) -> Iterator[TLSServer]:
    with TLSServer(context) as server:
        yield server


def server_context_for(leaf: trustme.LeafCert, *, tls10_only: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    if tls10_only:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1
    return context


def connect(context: ssl.SSLContext, address: tuple[str, int], server_hostname: str | None) -> ssl.SSLSocket:
    raw = socket.create_connection(address, timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def now() -> datetime:
    return datetime.now(timezone.utc)


def expired_window() -> dict[str, datetime]:
    return {"not_before": now() - timedelta(days=30), "not_after": now() - timedelta(days=1)}


def future_window() -> dict[str, datetime]:
    return {"not_before": now() + timedelta(days=1), "not_after": now() + timedelta(days=30)}


def write_pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def self_signed_context(hostname: str, tmp_path: Path, **window: datetime) -> ssl.SSLContext:
    """A server context presenting a self-signed certificate for ``hostname``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(window.get("not_before", now() - timedelta(days=1)))
        .not_valid_after(window.get("not_after", now() + timedelta(days=30)))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / f"self-signed-{hostname}-{certificate.serial_number}.pem"
    path.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(path)
    return context
