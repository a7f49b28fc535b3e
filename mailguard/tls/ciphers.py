"""Protocol versions and cipher suites, the same floor on both legs
(docs/pitfalls.md#protocol-versions-and-ciphers).

With ``ssl-tls.block-obsolete`` (the default): TLS 1.2 or newer, and for TLS 1.2 only ECDHE
key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305) — no RSA key exchange, CBC, RC4,
3DES or export suites (RFC 9325 §4.2). TLS 1.3 suites are all AEAD and left to OpenSSL.

With it off the user asked for compatibility with servers and clients stuck on TLS 1.0/1.1.
OpenSSL 3 allows those versions only at security level 0 (they sign handshakes with SHA-1),
so that level is set, but the suites that are broken whatever the version stay excluded.
"""

from __future__ import annotations

import ssl
import warnings

MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
COMPATIBLE_CIPHERS = "DEFAULT:!aNULL:!eNULL:!EXPORT:!RC4:!3DES:!MD5:!DES:@SECLEVEL=0"


def configure_protocols(context: ssl.SSLContext, *, block_obsolete: bool) -> None:
    # No TLS compression (CRIME) and no client-initiated renegotiation (RFC 9325 §3.5).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if block_obsolete:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(MODERN_CIPHERS)
    else:
        context.set_ciphers(COMPATIBLE_CIPHERS)
        with warnings.catch_warnings():
            # Python deprecates TLSVersion.TLSv1 itself; here it is the user's explicit choice.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
