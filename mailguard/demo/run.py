"""``mailguard demo``, the doing half: demo server, engine in front of it, fetch, collect, tear down.

The demo server and the FilterServer share one event loop in a background thread; the clients
are the standard library's blocking poplib and imaplib in the calling thread, exactly as a user's
script would use them. Everything is stopped before ``run_demo`` returns, whatever happened.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import poplib
import socket
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, TypeVar

from mailguard.demo.mailbox import EICAR, DemoMessage
from mailguard.demo.server import HOST, DemoServer

T = TypeVar("T")

ROUTES_KEY = "web-and-email.protocol-filtering.routes"
RESULT_HEADER = "X-MailGuard-Result"
CLIENT_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
# The demo mailbox has five messages; these only bound what a broken engine could make us hold.
MAX_LISTED_QUARANTINE_ENTRIES = 100
MAX_ENGINE_LOG_LINES = 200


@dataclass
class Received:
    """One message as the client received it."""

    protocol: str
    number: int
    subject: str
    result: str          # the X-MailGuard-Result header, "" when there is none
    original_size: int
    received_size: int
    sent_infected: bool  # the server's copy carries EICAR
    eicar_reached_client: bool
    unchanged: bool      # byte for byte what the server holds

    @property
    def caught(self) -> bool:
        return self.sent_infected and not self.eicar_reached_client


@dataclass
class DemoReport:
    home: str
    kept: bool
    server_ports: dict[str, int]
    engine_listeners: dict[str, str]
    received: list[Received] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # protocol -> why its fetch failed
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    engine_log: list[str] = field(default_factory=list)  # the engine's warnings during the fetch

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, item in zip(data["received"], self.received):
            entry["caught"] = item.caught
        return data


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mailguard-demo", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _free_port() -> int:
    # The port is free now; the engine binds it a moment later. A clash would fail the start
    # loudly, not silently, and on 127.0.0.1 ephemeral ports it does not happen in practice.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextmanager
def _home(home: Path | None) -> Iterator[tuple[Path, bool]]:
    if home is not None:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield home, True
        return
    with tempfile.TemporaryDirectory(prefix="mailguard-demo-") as tmp:
        yield Path(tmp), False


def run_demo(home: Path | None = None) -> DemoReport:
    """Run the whole demo and return what happened. Nothing is left running afterwards.

    With ``home`` the settings file and state (quarantine) there are used and kept, so the demo
    can be re-run with other settings (``MAILGUARD_HOME=DIR mailguard config set …``).
    """
    from mailguard.settings import Paths, load_settings, save_settings

    with _home(home) as (state_dir, kept):
        paths = Paths(config_file=state_dir / "config.toml", state_dir=state_dir)
        base = load_settings(paths.config_file)  # all defaults unless --home holds a settings file
        loop = _LoopThread()
        demo_server = DemoServer()
        try:
            loop.run(demo_server.start())
            listen = {"pop3": f"{HOST}:{_free_port()}", "imap": f"{HOST}:{_free_port()}"}
            routes = [
                f"{listen['pop3']}={HOST}:{demo_server.pop3_port}",
                f"{listen['imap']}={HOST}:{demo_server.imap_port}",
            ]
            settings = base.with_value(ROUTES_KEY, routes)
            save_settings(settings, paths.config_file)
            report = DemoReport(
                home=str(state_dir),
                kept=kept,
                server_ports={"pop3": demo_server.pop3_port, "imap": demo_server.imap_port},
                engine_listeners=listen,
            )
            _run_engine_and_fetch(loop, settings, paths, demo_server.mailbox, report)
        finally:
            loop.run(demo_server.stop())
            loop.close()
        report.quarantine = _list_quarantine(paths.quarantine_dir(settings))
    return report


def _run_engine_and_fetch(
    loop: _LoopThread, settings: Any, paths: Any, mailbox: list[DemoMessage], report: DemoReport
) -> None:
    from mailguard.proxy.server import FilterServer

    with _capture_engine_log() as engine_log:
        engine = FilterServer(settings, paths)
        loop.run(engine.start())
        try:
            for protocol, fetch in (("pop3", fetch_pop3), ("imap", fetch_imap)):
                host, port = report.engine_listeners[protocol].rsplit(":", 1)
                try:
                    report.received += fetch(host, int(port), mailbox)
                except (OSError, poplib.error_proto, imaplib.IMAP4.error) as exc:
                    report.errors[protocol] = f"{type(exc).__name__}: {exc}"
            report.counters = dict(engine.snapshot().get("counters", {}))
        finally:
            loop.run(engine.stop(grace=STOP_GRACE_SECONDS))
            report.engine_log = list(engine_log)


def _received(protocol: str, number: int, data: bytes, original: DemoMessage) -> Received:
    headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
    return Received(
        protocol=protocol,
        number=number,
        subject=str(headers.get("Subject", "")),
        result=" ".join(str(headers.get(RESULT_HEADER, "")).split()),
        original_size=len(original.raw),
        received_size=len(data),
        sent_infected=original.infected,
        eicar_reached_client=EICAR in data or _eicar_in_attachments(data),
        unchanged=data == original.raw,
    )


def _eicar_in_attachments(data: bytes) -> bool:
    """EICAR inside a base64 attachment or a zip is not visible as raw bytes; decode and look."""
    import email
    import io
    import zipfile

    message = email.message_from_bytes(data, policy=default_policy)
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        if EICAR in payload:
            return True
        if payload[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                    if any(EICAR in archive.read(name) for name in archive.namelist()):
                        return True
            except (zipfile.BadZipFile, RuntimeError, ValueError):
                continue
    return False


def fetch_pop3(host: str, port: int, mailbox: list[DemoMessage]) -> list[Received]:
    client = poplib.POP3(host, port, timeout=CLIENT_TIMEOUT_SECONDS)
    try:
        client.user("demo")
        client.pass_("demo")
        count, _ = client.stat()
        received = []
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            # poplib strips CRLF and un-stuffs dots; put the line ends back (RFC 1939 §3).
            received.append(_received("pop3", number, b"\r\n".join(lines) + b"\r\n", mailbox[number - 1]))
        return received
    finally:
        try:
            client.quit()
        except (OSError, poplib.error_proto):
            client.close()


def fetch_imap(host: str, port: int, mailbox: list[DemoMessage]) -> list[Received]:
    client = imaplib.IMAP4(host, port, timeout=CLIENT_TIMEOUT_SECONDS)
    try:
        client.login("demo", "demo")
        status, data = client.select("INBOX", readonly=True)
        if status != "OK":
            raise imaplib.IMAP4.error(f"SELECT failed: {data!r}")
        count = int(data[0] or 0)
        received = []
        for number in range(1, count + 1):
            status, data = client.fetch(str(number), "(BODY.PEEK[])")
            literal = next((item[1] for item in data if isinstance(item, tuple)), None)
            if status != "OK" or literal is None:
                raise imaplib.IMAP4.error(f"FETCH {number} failed: {data!r}")
            received.append(_received("imap", number, literal, mailbox[number - 1]))
        return received
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            client.shutdown()


def _list_quarantine(folder: Path) -> list[dict[str, Any]]:
    from mailguard.quarantine import Quarantine

    entries = Quarantine(folder).list()[:MAX_LISTED_QUARANTINE_ENTRIES]
    return [
        {"id": e.id, "subject": e.subject, "detections": e.detection_names, "size": e.size}
        for e in entries
    ]


class _ServiceLog(logging.Handler):
    """Keeps the engine's warnings (what it caught, what it could not scan) for the report, instead
    of letting them interleave with the tables on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < MAX_ENGINE_LOG_LINES:
            self.lines.append(record.getMessage())


@contextmanager
def _capture_engine_log() -> Iterator[list[str]]:
    logger = logging.getLogger("mailguard")
    handler = _ServiceLog()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

