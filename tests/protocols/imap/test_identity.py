"""The user a session's rewrite-cache entries are filed under (protocols/imap/identity.py): learnt from the
client's LOGIN or SASL response, confirmed by the server's tagged OK, forgotten on NO."""

from __future__ import annotations

import base64

import pytest

from mailguard.protocols.imap.commands import Command, ContinuationData
from mailguard.protocols.imap.responses import Response, parse_head
from mailguard.protocols.imap.identity import SessionIdentity


def command(line: bytes) -> Command:
    tag, rest = line.split(b" ", 1)
    name = rest.split(b" ", 1)[0].rstrip(b"\r\n")
    return Command(raw=line, tag=tag, name=name.decode().upper(), args_at=len(tag) + 1 + len(name))


def response(line: bytes) -> Response:
    return Response(line, *parse_head(line))


def authenticated(identity: SessionIdentity, tag: bytes, word: bytes = b"OK") -> SessionIdentity:
    identity.on_response(response(tag + b" " + word + b" done\r\n"))
    return identity


def test_login_names_the_user_once_the_server_says_ok() -> None:
    identity = SessionIdentity()
    identity.on_command(command(b"a LOGIN alice secret\r\n"))
    assert authenticated(identity, b"a").user == "alice" and identity.authenticated


def test_a_refused_login_names_nobody() -> None:
    identity = SessionIdentity()
    identity.on_command(command(b"a LOGIN alice wrong\r\n"))
    assert authenticated(identity, b"a", b"NO").user is None and not identity.authenticated


@pytest.mark.parametrize(("authzid", "authcid", "user"), [
    (b"", b"alice", "alice"),
    # a master login acting for bob sees bob's mailboxes: bob's cache entries, not the master's
    (b"bob", b"master", "bob"),
])
def test_plain_names_the_authorization_identity_when_given(authzid: bytes, authcid: bytes, user: str) -> None:
    token = base64.b64encode(authzid + b"\0" + authcid + b"\0" + b"secret")
    initial = SessionIdentity()
    initial.on_command(command(b"a AUTHENTICATE PLAIN " + token + b"\r\n"))
    assert authenticated(initial, b"a").user == user
    continued = SessionIdentity()
    continued.on_command(command(b"a AUTHENTICATE PLAIN\r\n"))
    continued.on_auth_line(ContinuationData(token + b"\r\n", b"a"))
    assert authenticated(continued, b"a").user == user


def test_xoauth2_names_its_user_and_garbage_names_nobody() -> None:
    identity = SessionIdentity()
    token = base64.b64encode(b"user=carol@example.org\x01auth=Bearer xyz\x01\x01")
    identity.on_command(command(b"a AUTHENTICATE XOAUTH2 " + token + b"\r\n"))
    assert authenticated(identity, b"a").user == "carol@example.org"
    broken = SessionIdentity()
    broken.on_command(command(b"b AUTHENTICATE PLAIN %%%not-base64\r\n"))
    assert authenticated(broken, b"b").user is None
