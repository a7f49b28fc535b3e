"""The signatures the running engine scans with: settled at start and reload, watched meanwhile.

- At start and at each reload the policy read from the settings is prepared
  (scan/detectors/sources.py): clamd looked for when ``detection-engine.clamd.enabled`` is
  ``auto``, every signature file hashed, the generation worked out. The log says what is in use,
  and says it loudly when clamd was not found or only the built-in signatures are active.
- Every ``CHECK_INTERVAL`` seconds the sources are looked at again: a signature file that
  changed, a clamd that loaded new databases (freshclam), a clamd that appeared (``auto``) make
  a new generation. That is an update, as a reload that changes them is: the scan workers
  rebuild their engines, and messages the IMAP cache served under the old generation are
  scanned again when fetched (proxy/imap_cache.py). A clamd that stops answering stays in use
  (it is being restarted, most likely): each scan connects afresh, so it is used again as soon
  as it answers, and messages scanned meanwhile follow ``response.on-scan-error``.

``check`` is the same look, on demand (tests call it rather than wait for the interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mailguard.errors import MailguardError
from mailguard.scan.detectors.sources import CLAMD_DOWN, CLAMD_IN_USE, CLAMD_NOT_FOUND, Inventory, prepare
from mailguard.scan.policy import Policy

__all__ = ["CHECK_INTERVAL", "DetectionWatch"]

log = logging.getLogger("mailguard.detection")

#: how often the running engine looks at its signature sources (freshclam checks hourly or so)
CHECK_INTERVAL = 60.0


class DetectionWatch:
    def __init__(self, on_update: Callable[[Policy], None], interval: float = CHECK_INTERVAL) -> None:
        self._on_update = on_update
        self.interval = interval
        self.base: Policy | None = None          # the policy as the settings say it (clamd maybe "auto")
        self.policy: Policy | None = None        # as the engine runs it
        self.inventory: Inventory | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def settle(self, base: Policy) -> Policy:
        """The policy to run for ``base`` (new settings: start or reload), clamd looked for afresh."""
        async with self._lock:
            policy, inventory = await asyncio.to_thread(prepare, base)
            before = self.inventory
            self.base, self.policy, self.inventory = base, policy, inventory
        if before is not None and before.generation != inventory.generation:
            log.info("signatures updated on reload: generation %s -> %s", before.generation, inventory.generation)
        _tell(inventory, policy)
        return policy

    async def check(self) -> bool:
        """Look at the sources again; True (and the engine updated) when the generation moved."""
        if self.base is None or self.inventory is None:
            return False
        async with self._lock:
            base, before = self.base, self.inventory
            policy, inventory = await asyncio.to_thread(prepare, base, before)
            if self.base is not base:
                return False  # a reload settled new settings meanwhile: they win
            self.policy, self.inventory = policy, inventory
        if before.clamd.state != inventory.clamd.state:
            _tell_clamd(inventory)
        if before.generation == inventory.generation:
            return False
        log.info("signatures updated: generation %s -> %s", before.generation, inventory.generation)
        self._on_update(policy)
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="mailguard-signatures")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except (MailguardError, OSError) as exc:
                log.error("could not check the signatures: %s", exc)
            except Exception:  # noqa: BLE001 - a bug in one look must not end the watch for good
                log.exception("could not check the signatures")

    def status(self) -> dict[str, Any] | None:
        """The detection section of ``mailguard status`` (sources.Inventory.to_json)."""
        if self.inventory is None or self.policy is None:
            return None
        return self.inventory.to_json(self.policy.signatures_max_age)


def _tell(inventory: Inventory, policy: Policy) -> None:
    counts = ", ".join(f"{row['name']}" + (f" ({row['signatures']})" if row["signatures"] is not None else "")
                       for row in inventory.detectors())
    log.info("detection: %s; generation %s", counts, inventory.generation)
    _tell_clamd(inventory)
    for warning in inventory.warnings(policy.signatures_max_age):
        log.warning("detection: %s", warning)


def _tell_clamd(inventory: Inventory) -> None:
    clamd = inventory.clamd
    if clamd.state == CLAMD_IN_USE:
        v = clamd.version
        log.info("clamd in use at %s (%s)", clamd.address, v.text if v else "version unknown")
    elif clamd.state == CLAMD_NOT_FOUND:
        log.warning("clamd not found (looked at %s): scanning without it", ", ".join(clamd.looked_at))
    elif clamd.state == CLAMD_DOWN:
        log.warning("clamd at %s does not answer: messages are unscanned until it does "
                    "(response.on-scan-error)", clamd.address)


def with_policy(config: Any, policy: Policy) -> Any:
    """``config`` (a RunConfig) running ``policy``."""
    return replace(config, policy=policy)
