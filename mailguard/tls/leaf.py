"""Leaf certificates: minting one (pure) and the two caches in front of minting.

A leaf (docs/pitfalls.md#leaf-certificates, docs/pitfalls.md#cache-keys-and-strong-hashes):

- has a fresh EC P-256 key of its own, never the CA's;
- names exactly the hosts the client asked for (SNI or the configured upstream name), plus the
  names on the real server's certificate, in its SAN (clients ignore the CN);
- says serverAuth (RFC 5280 §4.2.1.12), CA:FALSE, digitalSignature only;
- lives ``LEAF_LIFETIME`` (well under the 397 days CA/B BR §6.3.2 and Apple allow), and starts
  ``LEAF_BACKDATE`` in the past for clients whose clock is behind.

The caches are keyed by SHA-256 over the full sorted name set, so two different name sets can
never share a leaf. The disk cache lives in the active CA's folder, so a rotated CA never serves
a leaf its successor did not sign.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailguard.errors import TLSSetupError
from mailguard.tls.ca import MAX_COMMON_NAME, CertificateAuthority, random_serial
from mailguard.files import private_dir, write_atomic
from mailguard.tls.naming import name_set_key, normalise_names, parse_ip, permitted_by

LEAF_LIFETIME = timedelta(days=90)
LEAF_BACKDATE = timedelta(days=1)
#: A cached leaf with less life left than this is minted again.
LEAF_RENEW_BEFORE = timedelta(days=7)
#: Names a leaf may carry (what the client asked for plus what upstream presents).
MAX_LEAF_NAMES = 128
MAX_LEAVES_IN_MEMORY = 1024
MAX_LEAVES_ON_DISK = 4096
#: A cached leaf file larger than this is not one of ours.
MAX_LEAF_FILE_SIZE = 64 * 1024

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Leaf:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    names: tuple[str, ...]
    #: SHA-256 of the sorted name set: the cache key.
    cache_key: str
    #: The cached file with certificate and key (what ``ssl`` loads), None when not cached.
    path: Path | None = None

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def chain_file_bytes(self) -> bytes:
        """Certificate then its key, PEM, as ``SSLContext.load_cert_chain`` reads them."""
        key = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        )
        return self.certificate_pem() + key


def san_names(certificate: x509.Certificate) -> list[str]:
    """DNS names and IP addresses of a certificate's SAN, as text (empty without a SAN)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = list(san.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def issue_leaf(ca: CertificateAuthority, names: Sequence[str], *, now: datetime | None = None) -> Leaf:
    """Mint a leaf for ``names`` (already normalised, first one is the main name)."""
    if not names:
        raise TLSSetupError("a leaf certificate needs at least one host name")
    if len(names) > MAX_LEAF_NAMES:
        raise TLSSetupError(f"a leaf certificate may carry at most {MAX_LEAF_NAMES} names")
    now = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    general_names: list[x509.GeneralName] = []
    for name in names:
        ip = parse_ip(name)
        general_names.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(name))
    main = names[0]
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, main)] if len(main) <= MAX_COMMON_NAME else []
    )
    not_after = min(now + LEAF_LIFETIME, ca.not_after)  # never outlive the CA
    ca_key = ca.signing_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - LEAF_BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical.
        .add_extension(x509.SubjectAlternativeName(general_names), critical=not subject)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.subject_key_identifier),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Leaf(certificate=certificate, key=key, names=tuple(names), cache_key=name_set_key(names))


class LeafMinter:
    """Leaves for one CA, from memory, from disk, or freshly minted, in that order.

    Thread-safe: the engine may call it from its event loop (SNI callback) and from helpers.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        leaves_dir: Path | None,
        *,
        max_in_memory: int = MAX_LEAVES_IN_MEMORY,
        max_on_disk: int = MAX_LEAVES_ON_DISK,
        clock: Clock = _utcnow,
    ) -> None:
        self.ca = ca
        self.leaves_dir = leaves_dir
        self.max_in_memory = max_in_memory
        self.max_on_disk = max_on_disk
        self.clock = clock
        self._memory: OrderedDict[str, Leaf] = OrderedDict()
        self._lock = threading.Lock()
        #: How each leaf_for() was answered; the bench and tests read these.
        self.stats = {"memory": 0, "disk": 0, "minted": 0}

    def names_for(self, names: Iterable[str], upstream_cert_der: bytes | None = None) -> list[str]:
        """The SAN a leaf gets: the requested names, then the upstream certificate's.

        Upstream names outside the CA's name constraints are left out: one such name would make
        clients reject the whole leaf. Requested names are kept as asked, so a leaf for a name
        the CA may not sign fails visibly instead of silently naming something else.
        """
        wanted = normalise_names(names)
        if not wanted:
            raise TLSSetupError("a leaf certificate needs at least one valid host name")
        if upstream_cert_der:
            constraints = self.ca.name_constraints
            try:
                upstream = san_names(x509.load_der_x509_certificate(upstream_cert_der))
            except ValueError:
                upstream = []  # a malformed upstream certificate contributes no names
            for name in normalise_names(upstream):
                if len(wanted) >= MAX_LEAF_NAMES:
                    break
                if name not in wanted and permitted_by(name, constraints):
                    wanted.append(name)
        return wanted[:MAX_LEAF_NAMES]

    def leaf_for(self, names: Iterable[str], upstream_cert_der: bytes | None = None) -> Leaf:
        """A valid leaf naming ``names`` (plus the upstream certificate's names, when given)."""
        wanted = self.names_for(names, upstream_cert_der)
        key = name_set_key(wanted)
        now = self.clock()
        with self._lock:
            leaf = self._memory.get(key)
            if leaf is not None and self._fresh(leaf, now):
                self._memory.move_to_end(key)
                self.stats["memory"] += 1
                return leaf
            leaf = self._from_disk(key, now)
            if leaf is not None:
                self.stats["disk"] += 1
            else:
                leaf = issue_leaf(self.ca, wanted, now=now)
                leaf = self._to_disk(leaf)
                self.stats["minted"] += 1
            self._memory[key] = leaf
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_in_memory:
                self._memory.popitem(last=False)
            return leaf

    def _fresh(self, leaf: Leaf, now: datetime) -> bool:
        return leaf.certificate.not_valid_after_utc - now > LEAF_RENEW_BEFORE

    def _path(self, key: str) -> Path | None:
        return None if self.leaves_dir is None else self.leaves_dir / f"{key}.pem"

    def _from_disk(self, key: str, now: datetime) -> Leaf | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_LEAF_FILE_SIZE + 1)
            if len(data) > MAX_LEAF_FILE_SIZE:
                return None
            certificate = x509.load_pem_x509_certificate(data)
            leaf_key = serialization.load_pem_private_key(data, password=None)
        except (OSError, ValueError, TypeError):
            return None  # missing or damaged: mint again, the new file replaces it
        names = tuple(normalise_names(san_names(certificate)))
        if (
            not isinstance(leaf_key, ec.EllipticCurvePrivateKey)
            or leaf_key.public_key().public_numbers() != certificate.public_key().public_numbers()
            or certificate.issuer != self.ca.certificate.subject
            or name_set_key(names) != key
        ):
            return None
        leaf = Leaf(certificate=certificate, key=leaf_key, names=names, cache_key=key, path=path)
        return leaf if self._fresh(leaf, now) else None

    def _to_disk(self, leaf: Leaf) -> Leaf:
        path = self._path(leaf.cache_key)
        if path is None or self.leaves_dir is None:
            return leaf
        private_dir(self.leaves_dir)
        # A cache: a crash may lose the file (minted again) but never shows half of one.
        write_atomic(path, leaf.chain_file_bytes(), durable=False)
        self._prune_disk()
        return Leaf(leaf.certificate, leaf.key, leaf.names, leaf.cache_key, path)

    def _prune_disk(self) -> None:
        assert self.leaves_dir is not None
        entries = [entry for entry in os.scandir(self.leaves_dir) if entry.name.endswith(".pem")]
        if len(entries) <= self.max_on_disk:
            return
        entries.sort(key=lambda entry: entry.stat().st_mtime)
        for entry in entries[: len(entries) - self.max_on_disk]:
            Path(entry.path).unlink(missing_ok=True)
