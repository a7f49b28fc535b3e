"""BODY, BODYSTRUCTURE and ENVELOPE computed from message bytes (RFC 9051 §7.5.2).

Used for rewritten messages only: sizes and line counts must describe the bytes the client will
get (docs/pitfalls.md#sizes-and-structure-after-a-rewrite). Messages the engine left unchanged
keep the server's own answers.
"""

from __future__ import annotations

import email.utils

from mailguard.protocols.imap.encode import nstring, string
from mailguard.protocols.imap.structure import Entity, parse_message, parse_params

_ENVELOPE_ADDRESS_FIELDS = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")


def body_structure(data: bytes, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY of the whole message."""
    return _entity(data, parse_message(data), extensible)


def _entity(data: bytes, entity: Entity, ext: bool) -> bytes:
    if entity.is_multipart and entity.children:
        out = b"(" + b"".join(_entity(data, child, ext) for child in entity.children)
        out += b" " + string(entity.subtype.encode())
        if ext:
            out += b" " + _params(entity.params) + b" " + _disposition(entity)
            out += b" " + _language(entity) + b" " + nstring(entity.field(b"content-location"))
        return out + b")"
    body = data[entity.body_start : entity.end]
    maintype, subtype, params = entity.maintype, entity.subtype, entity.params
    if entity.is_multipart:  # a multipart without parts is described as text, like Dovecot does
        maintype, subtype, params = "text", "plain", []
    if maintype == "text" and not any(name.lower() == b"charset" for name, _ in params):
        params = params + [(b"charset", b"us-ascii")]  # RFC 2045 §5.2 default, spelled out
    fields = [
        string(maintype.encode()),
        string(subtype.encode()),
        _params(params),
        nstring(entity.field(b"content-id")),
        nstring(entity.field(b"content-description")),
        string((entity.field(b"content-transfer-encoding") or b"7bit").lower()),
        b"%d" % len(body),
    ]
    if entity.message is not None:
        fields.append(envelope(data, entity.message))
        fields.append(_entity(data, entity.message, ext))
        fields.append(b"%d" % count_lines(body))
    elif maintype == "text":
        fields.append(b"%d" % count_lines(body))
    if ext:
        fields.append(nstring(entity.field(b"content-md5")))
        fields.append(_disposition(entity))
        fields.append(_language(entity))
        fields.append(nstring(entity.field(b"content-location")))
    return b"(" + b" ".join(fields) + b")"


def count_lines(body: bytes) -> int:
    """Lines of a body, counted as line ends (a last line without one does not count), as
    Dovecot does, so a rewritten message is described like the server describes the rest."""
    return body.count(b"\n")


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(string(name.lower()) + b" " + string(value) for name, value in params) + b")"


def _disposition(entity: Entity) -> bytes:
    value = entity.field(b"content-disposition")
    if not value:
        return b"NIL"
    kind, _, rest = value.partition(b";")
    return b"(" + string(kind.strip().lower()) + b" " + _params(parse_params(rest)) + b")"


def _language(entity: Entity) -> bytes:
    value = entity.field(b"content-language")
    if not value:
        return b"NIL"
    tags = [tag.strip() for tag in value.split(b",") if tag.strip()]
    return b"(" + b" ".join(string(tag) for tag in tags) + b")"


def envelope(data: bytes, message: Entity) -> bytes:
    """ENVELOPE of a message: date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id.

    RFC 9051 §7.5.2: sender and reply-to default to from; header values are given as
    they are, not decoded.
    """
    date = message.field(b"date")
    subject = message.field(b"subject")
    addresses = {name: _addresses(message.field(name)) for name in _ENVELOPE_ADDRESS_FIELDS}
    if addresses[b"sender"] == b"NIL":
        addresses[b"sender"] = addresses[b"from"]
    if addresses[b"reply-to"] == b"NIL":
        addresses[b"reply-to"] = addresses[b"from"]
    parts = [nstring(date), nstring(subject)]
    parts += [addresses[name] for name in _ENVELOPE_ADDRESS_FIELDS]
    parts += [nstring(message.field(b"in-reply-to")), nstring(message.field(b"message-id"))]
    return b"(" + b" ".join(parts) + b")"


def _addresses(value: bytes | None) -> bytes:
    if not value:
        return b"NIL"
    out = []
    for name, address in email.utils.getaddresses([value.decode("latin-1")]):
        if not address and not name:
            continue
        mailbox, _, host = address.rpartition("@") if "@" in address else (address, "", "")
        out.append(
            b"("
            + (string(name.encode("latin-1")) if name else b"NIL")
            + b" NIL "
            + (string(mailbox.encode("latin-1")) if mailbox else b"NIL")
            + b" "
            + (string(host.encode("latin-1")) if host else b"NIL")
            + b")"
        )
    return b"(" + b"".join(out) + b")" if out else b"NIL"
