"""The IMAP entry of the proxy core's ``PROTOCOL_HANDLERS``: a SessionContext to an ImapDriver."""

from __future__ import annotations

import threading
from pathlib import Path

from mailguard.protocols.imap.limits import ImapLimits
from mailguard.proxy.conn import Conn
from mailguard.proxy.imap import ClientNamedTls, ImapContext, ImapDriver
from mailguard.proxy.imap_cache import RewriteCache
from mailguard.proxy.context import SessionContext

__all__ = ["handle_imap"]

#: room for a FETCH response's framing around the largest message literal we accept
_RESPONSE_SLACK = 4 * 1024 * 1024

_caches: dict[Path, RewriteCache] = {}
_caches_lock = threading.Lock()


def _cache_for(state_dir: Path | None) -> RewriteCache | None:
    """One cache per state folder and process: its inventory is read once."""
    if state_dir is None:
        return None
    folder = state_dir / "imap-cache"
    with _caches_lock:
        if folder not in _caches:
            _caches[folder] = RewriteCache(folder)
        return _caches[folder]


def imap_context(ctx: SessionContext) -> ImapContext:
    config, host = ctx.config, ctx.host
    paths = getattr(host, "paths", None)
    state_dir = getattr(paths, "state_dir", None)
    largest = config.policy.max_object_size
    session_limits = config.limits
    limits = ImapLimits(
        max_response_literal=largest + _RESPONSE_SLACK,
        max_response_size=largest + 2 * _RESPONSE_SLACK,
        # An upload is streamed, not held (commands.py): its cap is what may pass at all.
        max_append_literal=max(largest, session_limits.max_message_size),
        max_command_size=largest + _RESPONSE_SLACK,
    )
    cache = _cache_for(state_dir)
    if cache is not None:
        cache.follow(host)  # records of earlier signatures are scanned again (imap_cache.py)
    context = ImapContext(
        scanner=host.pool,
        server_id=f"{ctx.upstream_host}:{ctx.upstream_port}",
        cache=cache,
        limits=limits,
        implicit_tls=ctx.implicit_tls,
        on_oversize=config.policy.on_scan_error,
        idle_timeout=host.idle_timeout,
        draining=host.draining,
        host=host,
        log=ctx.log,
        read_high_water=session_limits.max_session_buffer,
        server_timeout=session_limits.server_timeout,
    )
    if config.ssl_enabled and host.tls.can_intercept and not ctx.implicit_tls:
        from mailguard.proxy.upstream import needs_client_name, upgrade_upstream

        async def upgrade(conn: Conn) -> None:
            await upgrade_upstream(conn, ctx.upstream_host, host.tls)

        context.upgrade_upstream = upgrade
        if not needs_client_name(ctx.upstream):
            context.client_tls = host.tls.client_context([ctx.upstream_host], None)
        else:
            async def upgrade_as(conn: Conn, name: str) -> None:
                await upgrade_upstream(conn, name, host.tls, named_by_client=True)

            context.client_named_tls = ClientNamedTls(
                upgrade=upgrade_as,
                client_context=lambda name, certificate: host.tls.client_context([name], certificate),
                excluded=lambda name: host.config.excluded_domain(name, ctx.upstream_host),
                hello_timeout=host.greeting_timeout,
                host=host,
            )
    return context


async def handle_imap(ctx: SessionContext) -> None:
    ctx.host.count("imap_sessions")
    driver = ImapDriver(ctx.client, ctx.upstream, imap_context(ctx))
    machine = driver.machine
    ctx.authenticated = lambda: machine.identity.authenticated or machine.relayed
    await driver.run(client_early=ctx.client_early, upstream_early=ctx.greeting)
