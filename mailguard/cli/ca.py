"""``mailguard ca``: the interception CA — create, show, export, trust, rotate, and test-mint leaves."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailguard.cli.common import ConfigOption, JsonOption, note, open_settings, print_json, tell_running_engine
from mailguard.errors import UsageError

app = typer.Typer(
    help="The interception CA that signs the certificates mail clients see when TLS is filtered.",
    no_args_is_help=True,
    add_completion=False,
)

#: ``ca show`` warns when the CA expires sooner than this.
EXPIRY_WARNING = timedelta(days=30)
_CONSTRAINTS_KEY = "web-and-email.ssl-tls.root-certificate.name-constraints"


class KeyTypeChoice(str, Enum):
    ec = "ec"
    rsa = "rsa"


class FormatChoice(str, Enum):
    pem = "pem"
    der = "der"
    p12 = "p12"


def _store(config: Optional[Path]):
    from mailguard.tls.castore import CAStore

    paths, settings = open_settings(config)
    return paths, settings, CAStore(paths.state_dir)


def _describe(stored) -> dict[str, object]:
    ca = stored.ca
    return {
        "id": stored.id,
        "subject": ca.subject,
        "fingerprint_sha256": ca.fingerprint,
        "not_before": ca.not_before.isoformat(),
        "not_after": ca.not_after.isoformat(),
        "key_type": ca.key_type,
        "key": ca.key_description,
        "name_constraints": ca.name_constraints,
        "certificate_path": str(stored.cert_path),
        "key_path": str(stored.key_path) if stored.key_path.exists() else None,
    }


def _announce(verb: str, stored) -> None:
    ca = stored.ca
    note(f"mailguard: {verb} {ca.subject}")
    note(f"  SHA-256 {_colons(ca.fingerprint)}")
    note(f"  valid until {ca.not_after:%Y-%m-%d}, key {ca.key_description}, certificate {stored.cert_path}")
    if ca.name_constraints:
        note(f"  may only sign names under: {', '.join(ca.name_constraints)}")


def _colons(fingerprint: str) -> str:
    return ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)).upper()


@app.command()
def init(
    force: Annotated[bool, typer.Option("--force", help="Replace an existing CA (its key is destroyed).")] = False,
    key_type: Annotated[KeyTypeChoice, typer.Option("--key-type", help="EC P-256 (default) or RSA 3072.")] = (
        KeyTypeChoice.ec),
    config: ConfigOption = None,
) -> None:
    """Create the interception CA, unique to this install.

    The key is written 0600 in the state folder and never leaves it. When
    web-and-email.ssl-tls.root-certificate.name-constraints is set, the CA can only sign those
    DNS names. Refuses to overwrite an existing CA without --force.
    """
    paths, settings, store = _store(config)
    stored = store.init(key_type=key_type.value, name_constraints=settings.get(_CONSTRAINTS_KEY), force=force)
    _announce("created", stored)
    note("  clients trust it after 'mailguard ca install' (system) or an import of 'mailguard ca export'")
    tell_running_engine(paths)


@app.command()
def show(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Show the CA: subject, SHA-256 fingerprint, validity, key type, name constraints, files.

    Warns on stderr when the CA expires within 30 days. Retired CAs (after 'ca rotate') and
    trust-store installs are listed too.
    """
    from mailguard.tls.trust import read_records

    _, _, store = _store(config)
    active = store.active()
    retired = [stored for stored in store.all() if stored.id != active.id]
    installs = read_records(store.trust_record_path)
    remaining = active.ca.not_after - datetime.now(timezone.utc)
    if remaining < EXPIRY_WARNING:
        state = "expired" if remaining.total_seconds() <= 0 else f"expires in {remaining.days} days"
        note(f"mailguard: warning: the CA {state} ({active.ca.not_after:%Y-%m-%d}); make a new one with: "
             "mailguard ca rotate")
    if json_:
        print_json({
            **_describe(active),
            "retired": [_describe(stored) for stored in retired],
            "installed": [record.to_json() for record in installs],
        })
        return
    ca = active.ca
    lines = [
        f"subject:           {ca.subject}",
        f"SHA-256:           {_colons(ca.fingerprint)}",
        f"valid:             {ca.not_before:%Y-%m-%d %H:%M} to {ca.not_after:%Y-%m-%d %H:%M} UTC",
        f"key:               {ca.key_description}",
        f"name constraints:  {', '.join(ca.name_constraints) or 'none (may sign any name)'}",
        f"certificate:       {active.cert_path}",
        f"key file:          {active.key_path}",
    ]
    lines += [f"retired:           {s.ca.subject} (SHA-256 {s.ca.fingerprint[:16]}…, until "
              f"{s.ca.not_after:%Y-%m-%d})" for s in retired]
    lines += [f"installed:         {r.path} ({r.store}, SHA-256 {r.fingerprint[:16]}…)" for r in installs]
    typer.echo("\n".join(lines))


@app.command()
def export(
    format_: Annotated[FormatChoice, typer.Option("--format", help="pem, der, or p12 (certificate-only PKCS#12).")] = (
        FormatChoice.pem),
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE",
                                                   help="Write to FILE instead of stdout.")] = None,
    config: ConfigOption = None,
) -> None:
    """Export the CA certificate for clients to trust. Never the key."""
    from mailguard.tls.export import export_certificate
    from mailguard.files import PUBLIC_FILE_MODE, write_atomic

    _, _, store = _store(config)
    data = export_certificate(store.active().ca.certificate, format_.value)
    if output is not None:
        write_atomic(output, data, mode=PUBLIC_FILE_MODE)
        note(f"mailguard: wrote the CA certificate ({format_.value}) to {output}")
        return
    if format_ is not FormatChoice.pem and sys.stdout.isatty():
        raise UsageError(f"{format_.value} is binary; write it to a file with --output FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@app.command()
def install(config: ConfigOption = None) -> None:
    """Add the CA to the system trust store (Debian/Ubuntu, Fedora/RHEL). Needs root.

    What was added is recorded, so 'mailguard ca uninstall' removes exactly that. Thunderbird
    and Firefox keep their own store: the command prints how to add the CA there.
    """
    from mailguard.tls import trust

    _, _, store = _store(config)
    stored = store.active()
    record = trust.install(stored, store.trust_record_path)
    note(f"mailguard: added {stored.ca.subject} to the {record.store} trust store as {record.path}")
    note(trust.nss_instructions("mailguard-ca.pem", f"mailguard {stored.ca.fingerprint[:8]}"))


@app.command()
def uninstall(config: ConfigOption = None) -> None:
    """Remove every mailguard CA that 'ca install' added to the system trust store. Needs root."""
    from mailguard.tls import trust

    _, _, store = _store(config)
    removed = trust.uninstall(store.trust_record_path)
    if not removed:
        note("mailguard: no mailguard CA was installed in a system trust store; nothing to do")
    for record in removed:
        note(f"mailguard: removed {record.path} ({record.store} trust store)")


@app.command()
def rotate(
    key_type: Annotated[Optional[KeyTypeChoice], typer.Option("--key-type", help="Default: as the current CA.")] = None,
    config: ConfigOption = None,
) -> None:
    """Make a new CA and sign with it from now on.

    The old certificate stays on disk and stays trusted wherever it was installed until
    'mailguard ca uninstall'; its key and cached leaves are destroyed.
    """
    paths, settings, store = _store(config)
    old, new = store.rotate(key_type=key_type.value if key_type else None,
                            name_constraints=settings.get(_CONSTRAINTS_KEY))
    _announce("created", new)
    note(f"  retired {old.ca.subject} (SHA-256 {old.ca.fingerprint[:16]}…); it stays trusted until "
         "'mailguard ca uninstall'")
    note("  trust the new CA with 'mailguard ca install' or an import of 'mailguard ca export'")
    tell_running_engine(paths)


@app.command()
def issue(
    hosts: Annotated[list[str], typer.Argument(metavar="HOST...", help="Host names or IP addresses for the SAN.",
                                               show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Mint a leaf certificate for HOST... with the CA and print it (PEM, certificate only).

    For inspection: the leaf is made as the engine would make it, with a fresh key that is
    thrown away, and is not cached. A summary goes to stderr.
    """
    from mailguard.tls.leaf import LeafMinter, issue_leaf
    from mailguard.tls.naming import normalise_names, permitted_by

    _, _, store = _store(config)
    ca = store.active().ca
    names = normalise_names(hosts)
    rejected = [host for host in hosts if not normalise_names([host])]
    if rejected:
        raise UsageError(f"not a host name or IP address: {', '.join(rejected)}")
    leaf = issue_leaf(ca, LeafMinter(ca, None).names_for(names))
    sys.stdout.write(leaf.certificate_pem().decode("ascii"))
    cert = leaf.certificate
    note(f"mailguard: leaf for {', '.join(leaf.names)}; valid {cert.not_valid_before_utc:%Y-%m-%d} to "
         f"{cert.not_valid_after_utc:%Y-%m-%d}; signed by {ca.subject}")
    outside = [name for name in leaf.names if not permitted_by(name, ca.name_constraints)]
    if outside:
        note(f"mailguard: warning: outside the CA's name constraints, clients will reject it: {', '.join(outside)}")
