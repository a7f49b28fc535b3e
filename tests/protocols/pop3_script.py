"""A tiny harness for byte-script tests of the POP3 proxy machine: feed bytes, collect events."""

from __future__ import annotations

from mailguard.protocols.pop3 import Pop3Options, Pop3Proxy
from mailguard.protocols.pop3_events import Closed, ScanMessage, Side, StartTls, SwitchToRelay
from tests.protocols.machine_script import MachineScript


class Script(MachineScript):
    def __init__(self, options: Pop3Options | None = None, greeting: bytes = b"+OK ready\r\n") -> None:
        super().__init__(Pop3Proxy(options))
        if greeting:
            self.server(greeting)
            assert self.take_client() == greeting


__all__ = ["Script", "ScanMessage", "StartTls", "SwitchToRelay", "Closed", "Side"]
