"""The filtering engine's network side: listeners, sessions, reload, graceful stop, counters.

    server = FilterServer(settings, paths)
    await server.start()             # one listener per route, or transparent.listen
    await server.reload(settings)    # live: listeners added/removed, sessions keep running
    server.snapshot()                # {"listeners", "protection", "counters", ...}
    await server.stop(grace=10.0)    # no new sessions; POP3 sessions end after their current
                                     # command; whatever is still open after ``grace`` is closed

The lifecycle around it lives in service/: the daemon and its signals in service/daemon.py, the
pid file in service/pidlock.py, the control socket in service/control.py; the nftables rules in
transparent/netfilter.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from mailguard.errors import ServiceError
from mailguard.proxy.conn import Conn
from mailguard.scanpool.detection import DetectionWatch, with_policy
from mailguard.proxy.limits import MESSAGES_IN_FLIGHT, Admission
from mailguard.proxy.runconfig import RunConfig
from mailguard.scanpool.pool import ScanPool
from mailguard.proxy.context import IDLE_TIMEOUT, SessionHost
from mailguard.proxy.session import refuse_at_limit, run_session
from mailguard.proxy.upstream import TlsKit

if TYPE_CHECKING:
    from mailguard.scan.policy import Policy
    from mailguard.settings import Paths, Settings

__all__ = ["COUNTERS", "FilterServer"]

log = logging.getLogger("mailguard.proxy")

COUNTERS = (
    "connections", "messages_scanned", "infected", "blocked", "unscanned", "bytes", "errors",
    "relayed", "pop3_sessions", "bytes_scanned", "read_ahead",
    # sessions on a port in no protocol list that were not recognised as POP3 or IMAP
    # (protocol-filtering.unrecognized decides whether they were blocked or relayed)
    "unrecognized",
    # limits.* (proxy/limits.py): connections refused at a session cap; sessions ended by a
    # time-out (login, server); sessions ended because an answer passed limits.max-message-size
    "refused", "timed_out", "oversized",
)
# Refusals being told to their clients at once; past this a refused connection is just closed,
# so a flood costs no more than this many small tasks.
MAX_REFUSING = 64
# Pending connections the kernel queues per listener before we accept them.
LISTEN_BACKLOG = 1024

_ListenKey = tuple[str, tuple[str, int]]   # ("route" | "transparent", (host, port))


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class FilterServer(SessionHost):
    def __init__(self, settings: "Settings", paths: "Paths | None", *, pool_kind: str | None = None,
                 pool_workers: int | None = None, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.paths = paths
        self.config = RunConfig.from_settings(settings, paths)
        self.idle_timeout = idle_timeout
        self._pool_kind = pool_kind
        self._pool_workers = pool_workers
        self.counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self._listeners: dict[_ListenKey, asyncio.Server] = {}
        self._upstreams: dict[_ListenKey, tuple[str, int] | None] = {}
        self._sessions: set[asyncio.Task[None]] = set()
        self._live: set[Conn] = set()
        self._admission = Admission()
        self._refusing: set[asyncio.Task[None]] = set()
        self._session_number = 0
        self._started = False
        #: transparent mode: address families without a listener here, and why (the rules block them)
        self.unlistened: dict[str, str] = {}

    # --- SessionHost -------------------------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def _state_dir(self):  # noqa: ANN202
        return self.paths.state_dir if self.paths is not None else None

    async def start(self) -> None:
        if self._started:
            raise ServiceError("the filtering engine is already started")
        self.draining = asyncio.Event()
        self.fetch_slots = asyncio.Semaphore(MESSAGES_IN_FLIGHT)
        self.tls = await asyncio.to_thread(TlsKit.from_config, self.config, self._state_dir)
        self.detection = DetectionWatch(self._signatures_updated)
        self.config = with_policy(self.config, await self.detection.settle(self.config.policy))
        self.pool = ScanPool(self.config.policy, self.config.quarantine_dir,
                             kind=self._pool_kind, workers=self._pool_workers)
        self.pool.loop_is_idle = lambda: len(self._sessions) <= 1
        try:
            await self._sync_listeners()
        except BaseException:
            await self._close_listeners(list(self._listeners))
            self.pool.close()
            raise
        self._started = True
        self.detection.start()
        log.info("filtering engine listening on %s (pool: %d %s workers)",
                 ", ".join(_show(k[1]) for k in self._listeners) or "nothing", self.pool.workers,
                 self.pool.kind)

    async def reload(self, settings: "Settings") -> None:
        config = RunConfig.from_settings(settings, self.paths)
        tls = await asyncio.to_thread(TlsKit.from_config, config, self._state_dir)
        config = with_policy(config, await self.detection.settle(config.policy))
        self.config, self.tls = config, tls
        self.pool.update(config.policy, config.quarantine_dir)
        await self._sync_listeners()
        log.info("filtering engine reloaded: protection %s", self._protection())

    def _signatures_updated(self, policy: "Policy") -> None:
        """New signatures while running (scanpool/detection.py): new scans use them."""
        self.config = with_policy(self.config, policy)
        self.pool.update(policy, self.config.quarantine_dir)

    async def stop(self, grace: float) -> None:
        await self.detection.stop()
        await self._close_listeners(list(self._listeners))
        for refusing in list(self._refusing):
            refusing.cancel()
        self.draining.set()
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.info("closed %d sessions still open after %.1fs", len(pending), grace)
                await asyncio.wait(pending, timeout=5.0)
        await self.pool.aclose()
        self._started = False

    def snapshot(self) -> dict[str, Any]:
        counters = dict(self.counters)
        counters["bytes"] += sum(c.bytes_in + c.bytes_out for c in self._live)
        return {
            "listeners": [
                {"kind": kind, "listen": _show(address),
                 "upstream": _show(up) if (up := self._upstreams.get((kind, address))) else "original destination"}
                for kind, address in self._listeners
            ],
            "protection": self._protection(),
            "active_sessions": len(self._sessions),
            "limits": {"max_sessions": self.config.limits.max_sessions,
                       "max_sessions_per_client": self.config.limits.max_sessions_per_client},
            "pool": {"kind": self.pool.kind, "workers": self.pool.workers} if self._started else None,
            "counters": counters,
            "detection": self.detection.status() if self._started else None,
        }

    def _protection(self) -> str:
        return "on" if self.config.scanning else "off"

    # --- listeners ---------------------------------------------------------------------------

    def _wanted(self) -> dict[_ListenKey, tuple[str, int] | None]:
        if self.config.transparent is not None:  # one listener per address family
            from mailguard.transparent.plan import FAMILIES

            plan = self.config.transparent
            return {("transparent", plan.address(family)): None for family in FAMILIES}
        wanted: dict[_ListenKey, tuple[str, int] | None] = {}
        for route in self.config.routes:
            key = ("route", route.listen)
            if key in wanted:
                raise ServiceError(f"two routes listen on {_show(route.listen)}")
            wanted[key] = route.upstream
        return wanted

    async def _sync_listeners(self) -> None:
        wanted = self._wanted()
        await self._close_listeners([key for key in self._listeners if key not in wanted])
        self._upstreams.update(wanted)  # a changed upstream applies to new connections at once
        loop = asyncio.get_running_loop()
        self.unlistened = {}
        for key in wanted:
            if key in self._listeners:
                continue
            host, port = key[1]
            where: dict[str, Any] = {"host": host, "port": port, "reuse_address": True}
            if key[0] == "transparent":
                from mailguard.transparent.plan import family_of, listening_socket

                sock = listening_socket(host, port, LISTEN_BACKLOG)
                if isinstance(sock, str):  # this family cannot be listened in here: the rules block it
                    self.unlistened[family_of(host)] = sock
                    continue
                where = {"sock": sock}
            try:
                self._listeners[key] = await loop.create_server(
                    self._protocol_factory(key), backlog=LISTEN_BACKLOG, **where)
            except OSError as exc:
                raise ServiceError(f"cannot listen on {_show(key[1])}: {exc.strerror or exc}") from exc
        if wanted and not self._listeners:
            raise ServiceError("cannot listen at all: " + "; ".join(self.unlistened.values()))

    async def _close_listeners(self, keys: list[_ListenKey]) -> None:
        for key in keys:
            listener = self._listeners.pop(key)
            self._upstreams.pop(key, None)
            # close() only: from Python 3.12 on, wait_closed() also waits for every session the
            # listener accepted, and sessions outlive their listener on reload by design.
            listener.close()

    def _protocol_factory(self, key: _ListenKey):  # noqa: ANN202
        return lambda: Conn(on_connect=lambda conn: self._accept(conn, key))

    def _accept(self, conn: Conn, key: _ListenKey) -> None:
        # Read nothing until the session knows what the first bytes are for: with implicit TLS
        # they are the client's handshake and must reach the TLS layer, not our buffer.
        conn.set_reading(False)
        self.count("connections")
        self._session_number += 1
        upstream = self._upstreams.get(key)
        mark = False
        if key[0] == "transparent":
            from mailguard.transparent.netfilter import NotRedirected, redirected_destination

            try:
                upstream = redirected_destination(conn.transport.get_extra_info("socket"))  # type: ignore[union-attr]
            except (OSError, NotRedirected) as exc:
                log.warning("[#%d %s] refused: %s", self._session_number, _show(conn.peer() or ("?", 0)),
                            exc if isinstance(exc, NotRedirected) else f"no original destination ({exc})")
                self.count("errors")
                conn.abort()
                return
            mark = True
        if upstream is None:
            conn.abort()
            return
        address = (conn.peer() or ("?", 0))[0]
        refusal = self._admission.refusal(self.config.limits, address)
        if refusal is not None:
            self._refuse(conn, upstream, refusal, transparent=mark)
            return
        self._admission.enter(address)
        self._live.add(conn)
        task = asyncio.get_running_loop().create_task(
            run_session(self, conn, upstream, self._session_number, mark_upstream=mark),
            name=f"mailguard-session-{self._session_number}",
        )
        self._sessions.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._admission.leave(address)
            self._sessions.discard(task)
            self._live.discard(conn)
            self.counters["bytes"] += conn.bytes_in + conn.bytes_out

        task.add_done_callback(finished)

    def _refuse(self, conn: Conn, upstream: tuple[str, int], reason: str, *, transparent: bool) -> None:
        self.count("refused")
        reported = self._admission.should_log_refusal()
        if reported:
            log.warning("refused %d connection%s: %s", reported, "" if reported == 1 else "s", reason)
        if len(self._refusing) >= MAX_REFUSING:
            conn.abort()
            return
        task = asyncio.get_running_loop().create_task(
            refuse_at_limit(self, conn, upstream, reason, transparent=transparent))
        self._refusing.add(task)
        task.add_done_callback(self._refusing.discard)
