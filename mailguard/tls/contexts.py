"""The client-facing leg: TLS server contexts that present minted leaves.

One ``ClientFacingTLS`` per engine (per CA): it owns the ``LeafMinter`` and a bounded cache of
per-leaf ``SSLContext`` objects, because loading a certificate and key into a context costs
more than a cached handshake. ``context(...)`` returns a context whose SNI callback picks (or
mints) the leaf for the name the client asked for and switches the connection to that leaf's
context — the stdlib's documented way to serve several certificates (``SSLContext.sni_callback``).
"""

from __future__ import annotations

import ssl
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailguard.errors import TLSSetupError
from mailguard.tls.ciphers import configure_protocols
from mailguard.files import write_atomic
from mailguard.tls.leaf import Leaf, LeafMinter
from mailguard.tls.naming import normalise_names

if TYPE_CHECKING:
    from mailguard.settings import Settings

MAX_LEAF_CONTEXTS = 1024


def server_context(*, block_obsolete: bool = True) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    configure_protocols(context, block_obsolete=block_obsolete)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


class ClientFacingTLS:
    def __init__(
        self, minter: LeafMinter, *, block_obsolete: bool = True, max_contexts: int = MAX_LEAF_CONTEXTS,
    ) -> None:
        self.minter = minter
        self.block_obsolete = block_obsolete
        self.max_contexts = max_contexts
        self._contexts: OrderedDict[tuple[str, int], ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()
        #: The last exception raised inside an SNI callback (the handshake only sees an alert).
        self.last_error: Exception | None = None

    @classmethod
    def from_state(cls, state_dir: Path, settings: "Settings") -> "ClientFacingTLS":
        """For the active CA of this install, with its disk leaf cache."""
        from mailguard.tls.castore import CAStore

        stored = CAStore(state_dir).active()
        return cls(LeafMinter(stored.ca, stored.leaves_dir),
                   block_obsolete=settings.get("web-and-email.ssl-tls.block-obsolete"))

    def leaf_context(self, leaf: Leaf) -> ssl.SSLContext:
        """A server context presenting ``leaf``, cached while the leaf is."""
        key = (leaf.cache_key, leaf.certificate.serial_number)
        with self._lock:
            context = self._contexts.get(key)
            if context is not None:
                self._contexts.move_to_end(key)
                return context
        context = server_context(block_obsolete=self.block_obsolete)
        self._load(context, leaf)
        with self._lock:
            self._contexts[key] = context
            while len(self._contexts) > self.max_contexts:
                self._contexts.popitem(last=False)
        return context

    def _load(self, context: ssl.SSLContext, leaf: Leaf) -> None:
        if leaf.path is None:
            raise TLSSetupError("a leaf without a cache file cannot be loaded into ssl")
        try:
            context.load_cert_chain(leaf.path)
        except FileNotFoundError:
            # The disk cache pruned it meanwhile: put it back (same bytes, same name).
            write_atomic(leaf.path, leaf.chain_file_bytes(), durable=False)
            context.load_cert_chain(leaf.path)

    def context(self, default_names: Sequence[str], upstream_cert_der: bytes | None = None) -> ssl.SSLContext:
        """A server context for one route or connection.

        The leaf names the SNI name when the client sent one, then ``default_names`` (the
        configured upstream name, the listener's name), then the names on the upstream
        certificate when the engine already has it. Clients that send no SNI (IP literals)
        get the default names alone.
        """
        defaults = normalise_names(default_names)
        base = server_context(block_obsolete=self.block_obsolete)

        def pick_leaf(ssl_object: ssl.SSLObject, server_name: str | None, _base: ssl.SSLContext) -> int | None:
            requested = normalise_names([server_name]) if server_name else []
            names = requested + [name for name in defaults if name not in requested]
            if not names:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            try:
                ssl_object.context = self.leaf_context(self.minter.leaf_for(names, upstream_cert_der))
            except Exception as exc:  # noqa: BLE001 - an exception here would only print
                self.last_error = exc
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            return None

        base.sni_callback = pick_leaf
        return base


def client_facing_context(
    tls: ClientFacingTLS, default_names: Sequence[str], upstream_cert_der: bytes | None = None,
) -> ssl.SSLContext:
    """Shorthand for ``tls.context(default_names, upstream_cert_der)``."""
    return tls.context(default_names, upstream_cert_der)
