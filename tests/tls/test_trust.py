from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from mailguard.errors import TLSSetupError
from mailguard.tls.castore import CAStore
from mailguard.tls.contexts import ClientFacingTLS
from mailguard.tls.leaf import LeafMinter
from mailguard.tls.trust import DEBIAN, FEDORA, detect_store, install, read_records, refresh_command, uninstall
from tests.peers import require, require_root
from tests.tls.helpers import GREETING, connect, serving


def test_detects_the_store_by_its_folders(tmp_path):
    (tmp_path / "deb/usr/local/share/ca-certificates").mkdir(parents=True)
    (tmp_path / "rh/etc/pki/ca-trust").mkdir(parents=True)
    assert detect_store(tmp_path / "deb") is DEBIAN
    assert detect_store(tmp_path / "rh") is FEDORA
    with pytest.raises(TLSSetupError, match="no supported system trust store"):
        detect_store(tmp_path / "none")


def test_refresh_commands():
    assert refresh_command(DEBIAN, Path("/"))[-1].endswith("update-ca-certificates")
    assert refresh_command(DEBIAN, Path("/"), after_removal=True)[-1] == "--fresh"
    assert refresh_command(DEBIAN, Path("/r"))[-2:] == ["--sysroot", "/r"]
    assert refresh_command(FEDORA, Path("/r")) == []  # no alternative root there


def test_fedora_layout_in_a_temporary_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc/pki/ca-trust/source/anchors").mkdir(parents=True)
    store = CAStore(tmp_path / "state")
    stored = store.init()
    record = install(stored, store.trust_record_path, root)
    anchor = root / f"etc/pki/ca-trust/source/anchors/mailguard-{stored.ca.fingerprint[:8]}.pem"
    assert record.path == str(anchor) and anchor.is_file() and record.store == "fedora"
    assert json.loads(store.trust_record_path.read_text())["installs"][0]["fingerprint"] == stored.ca.fingerprint
    assert read_records(store.trust_record_path) == [record]
    assert uninstall(store.trust_record_path) == [record]
    assert not anchor.exists() and read_records(store.trust_record_path) == []


@pytest.mark.root
@pytest.mark.peer
def test_install_into_the_real_system_store_and_take_it_out_again(tmp_path, monkeypatch):
    """As root on Debian: after install, clients using the system defaults accept a minted
    leaf; after uninstall they refuse it again."""
    require_root()
    require("update-ca-certificates")
    monkeypatch.delenv("MAILGUARD_TRUST_ROOT", raising=False)
    store = CAStore(tmp_path / "state")
    stored = store.init()
    tls = ClientFacingTLS(LeafMinter(stored.ca, stored.leaves_dir))
    openssl = shutil.which("openssl")

    def system_clients_accept(server) -> bool:
        try:
            with connect(ssl.create_default_context(), server.address, "imap.example.com") as sock:
                return sock.recv(len(GREETING)) == GREETING
        except ssl.SSLCertVerificationError:
            return False

    with serving(tls.context(["imap.example.com"])) as server:
        assert not system_clients_accept(server)  # control: not trusted before
        try:
            record = install(stored, store.trust_record_path)
            assert system_clients_accept(server)
            if openssl:
                leaf = tmp_path / "leaf.pem"
                leaf.write_bytes(tls.minter.leaf_for(["imap.example.com"]).certificate_pem())
                assert subprocess.run([openssl, "verify", str(leaf)], capture_output=True, timeout=30).returncode == 0
        finally:
            uninstall(store.trust_record_path)
        assert not Path(record.path).exists()
        assert not system_clients_accept(server)
