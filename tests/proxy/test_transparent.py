"""Transparent mode: the generated nftables ruleset, installing and removing it, SO_MARK and
SO_ORIGINAL_DST, and (root) an unmodified client in a network namespace getting scanned mail."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest

from mailguard.errors import EngineError
from mailguard.proxy import transparent
from mailguard.proxy.transparent import UPSTREAM_MARK, build_ruleset, parse_listen, redirected_ports
from mailguard.settings import Settings
from tests import peers

EC = "web-and-email.email-client.protocols."


# --- the ruleset (no root) ----------------------------------------------------------------------


def _rule_lines(ruleset: str, chain: str) -> list[str]:
    body = ruleset.split(f"chain {chain} {{", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_default_ports_are_redirected_to_the_listener_and_the_engine_is_exempt() -> None:
    ports = redirected_ports(Settings.defaults())
    assert ports == [110, 143, 585, 993, 995]
    ruleset = build_ruleset(("127.0.0.1", 8143), ports)
    lines = _rule_lines(ruleset, "output")
    assert lines[0] == "type nat hook output priority -100; policy accept;"
    # The engine's own upstream connections return before any redirect.
    assert lines[1] == f"meta mark {UPSTREAM_MARK:#x} return"
    assert lines[-1] == "meta nfproto ipv4 tcp dport { 110, 143, 585, 993, 995 } redirect to :8143"
    assert lines.index(f"meta mark {UPSTREAM_MARK:#x} return") < lines.index(lines[-1])
    # A loopback listener cannot take forwarded traffic: no prerouting chain.
    assert "prerouting" not in ruleset


def test_changed_port_lists_and_listener_are_followed() -> None:
    settings = Settings.from_values(
        {EC + "pop3.ports": "110, 1110", EC + "imaps.ports": "993",
         "web-and-email.protocol-filtering.transparent.listen": "0.0.0.0:9000"}
    )
    ports = redirected_ports(settings)
    assert ports == [110, 143, 993, 995, 1110]
    ruleset = build_ruleset(parse_listen("0.0.0.0:9000"), ports)
    redirect = "meta nfproto ipv4 tcp dport { 110, 143, 993, 995, 1110 } redirect to :9000"
    assert redirect in _rule_lines(ruleset, "output")
    prerouting = _rule_lines(ruleset, "prerouting")
    assert prerouting[1] == "fib daddr type local return"
    assert prerouting[-1] == redirect


@pytest.mark.parametrize(
    ("listen", "families"),
    [("127.0.0.1:8143", ["ipv4"]), ("[::1]:8143", ["ipv6"]), ("[::]:8143", ["ipv4", "ipv6"]),
     ("localhost:8143", ["ipv4", "ipv6"])],
)
def test_only_families_the_listener_accepts_are_redirected(listen: str, families: list[str]) -> None:
    ruleset = build_ruleset(parse_listen(listen), [110])
    found = [line.split()[2] for line in _rule_lines(ruleset, "output") if "redirect" in line]
    assert found == families


def test_the_ruleset_replaces_our_table_atomically_and_touches_nothing_else() -> None:
    ruleset = build_ruleset(("127.0.0.1", 8143), [110])
    first_lines = ruleset.splitlines()[:3]
    assert first_lines == ["table inet mailguard {}", "delete table inet mailguard", "table inet mailguard {"]
    tables = [line for line in ruleset.splitlines() if line.startswith("table ") or " table " in line]
    assert all("inet mailguard" in line for line in tables)


@pytest.mark.parametrize("bad", ["8143", "host:", "host:port"])
def test_bad_listen_values_are_refused(bad: str) -> None:
    with pytest.raises(EngineError, match="HOST:PORT"):
        parse_listen(bad)


def test_original_destination_of_a_socket_that_was_not_redirected_is_an_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted, pytest.raises(OSError):
            transparent.original_destination(accepted)


def test_without_net_admin_the_error_says_root_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transparent, "has_net_admin", lambda: False)
    with pytest.raises(EngineError, match="needs root"):
        transparent.install(Settings.defaults())


# --- in a network namespace (root) --------------------------------------------------------------


def _ns_name(role: str) -> str:
    return f"mgt-{role}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def netns() -> Iterator[callable]:
    """Make network namespaces; every one is deleted at the end (with its nftables tables)."""
    created: list[str] = []

    def make(role: str) -> str:
        name = _ns_name(role)
        subprocess.run(["ip", "netns", "add", name], check=True)
        created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    try:
        yield make
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", name], check=False)


def _in_ns(ns: str, code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(), **kwargs,
    )


@pytest.mark.root
@pytest.mark.peer
def test_install_status_and_remove_in_a_namespace(netns) -> None:
    peers.require_root()
    peers.require("nft")
    peers.require("ip")
    ns = netns("rules")
    result = _in_ns(ns, """
        from mailguard.proxy import transparent
        from mailguard.settings import Settings
        assert transparent.current_ruleset() == ""
        applied = transparent.install(Settings.defaults())
        listed = transparent.current_ruleset()
        assert "redirect to :8143" in listed and "meta mark 0x00006d67 return" in listed, listed
        transparent.install(Settings.defaults())          # a reload replaces, never duplicates
        assert transparent.current_ruleset().count("redirect to :8143") == 1
        transparent.remove()
        assert transparent.current_ruleset() == ""
        transparent.remove()                               # removing twice is fine
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
