"""`mailguard ca …` through Typer's runner."""

from __future__ import annotations

import json
import stat
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from mailguard.cli.app import app
from mailguard.tls.ca import CA_LIFETIME
from mailguard.tls.castore import CAStore
from tests.peers import require

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def active(home):
    return CAStore(home).active()


def test_init_then_refuses_then_force(mailguard_home):
    result = run("ca", "init")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # diagnostics only, on stderr
    first = active(mailguard_home)
    assert "created CN=mailguard interception CA" in result.stderr
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    again = run("ca", "init")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert active(mailguard_home).ca.fingerprint == first.ca.fingerprint
    forced = run("ca", "init", "--force", "--key-type", "rsa")
    assert forced.exit_code == 0
    assert active(mailguard_home).ca.key_description == "RSA 3072"


def test_commands_without_a_ca_say_what_to_run():
    for command in (["show"], ["export"], ["rotate"], ["issue", "a.example"], ["install"]):
        result = run("ca", *command)
        assert result.exit_code == 2, command
        assert "mailguard ca init" in result.stderr, command


def test_show_json_and_name_constraints_from_settings(mailguard_home):
    assert run("config", "set", "web-and-email.ssl-tls.root-certificate.name-constraints",
               "example.com", "example.org").exit_code == 0
    run("ca", "init")
    data = json.loads(run("ca", "show", "--json").stdout)
    stored = active(mailguard_home)
    assert data["fingerprint_sha256"] == stored.ca.fingerprint
    assert data["name_constraints"] == ["example.com", "example.org"]
    assert data["key_type"] == "ec" and data["key"] == "EC secp256r1"
    assert data["certificate_path"] == str(stored.cert_path) and data["key_path"] == str(stored.key_path)
    assert data["subject"].startswith("CN=mailguard interception CA (")
    assert datetime.fromisoformat(data["not_after"]) > datetime.now(timezone.utc)
    assert data["retired"] == [] and data["installed"] == []
    human = run("ca", "show")
    assert human.exit_code == 0 and human.stderr == ""
    assert ":".join(stored.ca.fingerprint[i:i + 2] for i in range(0, 64, 2)).upper() in human.stdout
    assert "example.com, example.org" in human.stdout


def test_show_warns_when_the_ca_expires_within_30_days(mailguard_home):
    CAStore(mailguard_home).init(now=datetime.now(timezone.utc) - CA_LIFETIME + timedelta(days=10))
    result = run("ca", "show", "--json")
    assert result.exit_code == 0
    assert "warning: the CA expires in 9 days" in result.stderr or "expires in 10 days" in result.stderr
    json.loads(result.stdout)  # stdout stays pure JSON
    CAStore(mailguard_home).init(force=True)
    assert "warning" not in run("ca", "show").stderr


def key_material(home) -> list[bytes]:
    key = active(home).ca.key
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return [der, key.private_numbers().private_value.to_bytes(32, "big"), b"PRIVATE KEY"]


@pytest.mark.parametrize("fmt", ["pem", "der", "p12"])
def test_export_never_contains_key_material(mailguard_home, tmp_path, fmt):
    run("ca", "init")
    certificate = active(mailguard_home).ca.certificate
    out = tmp_path / f"ca.{fmt}"
    result = run("ca", "export", "--format", fmt, "--output", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    to_stdout = run("ca", "export", "--format", fmt).stdout_bytes
    for data in (out.read_bytes(), to_stdout):
        for fragment in key_material(mailguard_home):
            assert fragment not in data
        if fmt == "pem":
            assert x509.load_pem_x509_certificate(data) == certificate
        elif fmt == "der":
            assert x509.load_der_x509_certificate(data) == certificate
        else:
            bundle = pkcs12.load_pkcs12(data, None)
            assert bundle.key is None and [c.certificate for c in bundle.additional_certs] == [certificate]


def test_issue_prints_only_the_certificate(mailguard_home):
    run("ca", "init")
    result = run("ca", "issue", "imap.example.com", "127.0.0.1")
    assert result.exit_code == 0
    assert b"PRIVATE KEY" not in result.stdout_bytes
    leaf = x509.load_pem_x509_certificate(result.stdout_bytes)
    leaf.verify_directly_issued_by(active(mailguard_home).ca.certificate)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["imap.example.com"]
    assert "leaf for imap.example.com, 127.0.0.1" in result.stderr
    assert run("ca", "issue", "not a host").exit_code == 2


def test_issue_warns_outside_the_name_constraints(mailguard_home):
    run("config", "set", "web-and-email.ssl-tls.root-certificate.name-constraints", "example.com")
    run("ca", "init")
    assert "warning" not in run("ca", "issue", "imap.example.com").stderr
    assert "outside the CA's name constraints" in run("ca", "issue", "www.bank.example").stderr


def test_rotate_keeps_the_old_certificate(mailguard_home):
    run("ca", "init")
    old = active(mailguard_home)
    result = run("ca", "rotate")
    assert result.exit_code == 0 and "stays trusted until 'mailguard ca uninstall'" in result.stderr
    data = json.loads(run("ca", "show", "--json").stdout)
    assert data["fingerprint_sha256"] != old.ca.fingerprint
    assert [r["fingerprint_sha256"] for r in data["retired"]] == [old.ca.fingerprint]
    assert data["retired"][0]["key_path"] is None  # the retired key is destroyed


def debian_sysroot(root):
    for folder in ("etc/ssl/certs", "usr/share/ca-certificates", "usr/local/share/ca-certificates",
                   "etc/ca-certificates/update.d"):
        (root / folder).mkdir(parents=True)
    # One distribution CA, as on a real system: Debian's tool only rewrites the bundle when at
    # least one certificate remains.
    distribution_ca = trustme.CA().cert_pem.bytes()
    (root / "usr/share/ca-certificates/distro-root.crt").write_bytes(distribution_ca)
    (root / "etc/ca-certificates.conf").write_text("distro-root.crt\n")
    return root


@pytest.mark.peer
def test_install_and_uninstall_in_a_temporary_trust_root(mailguard_home, tmp_path, monkeypatch):
    require("update-ca-certificates")
    root = debian_sysroot(tmp_path / "sysroot")
    monkeypatch.setenv("MAILGUARD_TRUST_ROOT", str(root))
    run("ca", "init")
    stored = active(mailguard_home)
    pem = stored.ca.certificate.public_bytes(serialization.Encoding.PEM)
    result = run("ca", "install")
    assert result.exit_code == 0, result.stderr
    assert "certutil -A" in result.stderr
    anchor = root / f"usr/local/share/ca-certificates/mailguard-{stored.ca.fingerprint[:8]}.crt"
    assert anchor.read_bytes() == pem
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    assert pem.strip() in bundle.read_bytes()
    assert run("ca", "install").exit_code == 0  # idempotent
    installed = json.loads(run("ca", "show", "--json").stdout)["installed"]
    assert [entry["path"] for entry in installed] == [str(anchor)]
    result = run("ca", "uninstall")
    assert result.exit_code == 0 and f"removed {anchor}" in result.stderr
    assert not anchor.exists() and pem.strip() not in bundle.read_bytes()
    assert not [p for p in (root / "etc/ssl/certs").iterdir() if "mailguard" in p.name or
                (p.is_symlink() and not p.exists())]  # no links left behind
    assert bundle.read_bytes().count(b"BEGIN CERTIFICATE") == 1  # the distribution's stays
    assert "nothing to do" in run("ca", "uninstall").stderr


@pytest.mark.peer
def test_uninstall_removes_rotated_cas_too_and_leaves_foreign_files(mailguard_home, tmp_path, monkeypatch):
    require("update-ca-certificates")
    root = debian_sysroot(tmp_path / "sysroot")
    monkeypatch.setenv("MAILGUARD_TRUST_ROOT", str(root))
    run("ca", "init")
    run("ca", "install")
    run("ca", "rotate")
    run("ca", "install")
    anchors = sorted((root / "usr/local/share/ca-certificates").iterdir())
    assert len(anchors) == 2
    anchors[0].write_text("someone else's file now\n")
    run("ca", "uninstall")
    assert [p.read_text() for p in (root / "usr/local/share/ca-certificates").iterdir()] == [
        "someone else's file now\n"]


def test_install_without_write_access_says_to_use_root(mailguard_home, tmp_path, monkeypatch):
    from mailguard.tls import trust

    root = debian_sysroot(tmp_path / "sysroot")
    monkeypatch.setenv("MAILGUARD_TRUST_ROOT", str(root))
    monkeypatch.setattr(trust.os, "access", lambda *args, **kwargs: False)  # as an ordinary user sees it
    run("ca", "init")
    result = run("ca", "install")
    assert result.exit_code == 2
    assert "needs root" in result.stderr and "sudo mailguard ca install" in result.stderr
    assert list((root / "usr/local/share/ca-certificates").iterdir()) == []


def test_install_without_a_known_trust_store(mailguard_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MAILGUARD_TRUST_ROOT", str(tmp_path / "empty"))
    run("ca", "init")
    result = run("ca", "install")
    assert result.exit_code == 2 and "no supported system trust store" in result.stderr


@pytest.mark.peer
def test_the_printed_certutil_command_works(mailguard_home, tmp_path):
    certutil = require("certutil")
    run("ca", "init")
    nssdb = tmp_path / "profile"
    nssdb.mkdir()
    subprocess.run([certutil, "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True, timeout=30)
    run("ca", "export", "--output", str(tmp_path / "mailguard-ca.pem"))
    from mailguard.tls.trust import nss_instructions

    nickname = f"mailguard {active(mailguard_home).ca.fingerprint[:8]}"
    line = next(l for l in nss_instructions("mailguard-ca.pem", nickname).splitlines() if "certutil -A" in l)
    command = line.strip().replace("PROFILE_DIR", str(nssdb)).replace("certutil", certutil, 1)
    subprocess.run(command, shell=True, check=True, cwd=tmp_path, timeout=30)
    listed = subprocess.run([certutil, "-L", "-d", f"sql:{nssdb}"], capture_output=True, text=True, check=True)
    assert nickname in listed.stdout and "C,," in listed.stdout
