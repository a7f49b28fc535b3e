"""Who and where: the user, the selected mailbox and its UIDVALIDITY, as the session goes.

Together with the server they name a message for good (RFC 9051 §2.3.1.1), which is what the rewrite
cache is keyed on (docs/pitfalls.md#messages-never-change). Learnt from the commands the client
sends and the answers the server gives, never from our guesses: a value is None until the server
confirmed it.
"""

from __future__ import annotations

import base64

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command, ContinuationData
from mailguard.protocols.imap.lexer import Lexer, NodeKind
from mailguard.protocols.imap.responses import ResponseKind, Response


class SessionIdentity:
    def __init__(self) -> None:
        self.user: str | None = None
        self.authenticated = False
        self.mailbox: bytes | None = None
        self.uidvalidity: int | None = None
        self._selecting: tuple[bytes, bytes] | None = None
        self._selecting_validity: int | None = None
        self._auth_tag: bytes | None = None
        self._mechanism = b""

    def on_command(self, command: Command) -> None:
        name = command.name
        if name in ("SELECT", "EXAMINE"):
            # Selecting deselects first (RFC 9051 §6.3.2), whatever the outcome.
            self.mailbox = self.uidvalidity = None
            mailbox = _first_argument(command)
            if mailbox is not None:
                self._selecting = (command.tag, mailbox)
        elif name in ("CLOSE", "UNSELECT"):
            self.mailbox = self.uidvalidity = None
        elif name == "LOGIN":
            self._auth_tag = command.tag
            user = _first_argument(command)
            self.user = None if user is None else user.decode("utf-8", "replace")
        elif name == "AUTHENTICATE":
            self._auth_tag = command.tag
            parts = command.args.split()
            self._mechanism = parts[0].upper() if parts else b""
            self.user = None
            if len(parts) > 1:
                self._user_from_sasl(parts[1])

    def on_auth_line(self, event: ContinuationData) -> None:
        if event.tag == self._auth_tag and self.user is None:
            self._user_from_sasl(event.raw.strip())

    def on_response(self, response: Response) -> None:
        if response.kind is ResponseKind.UNTAGGED and response.word == "OK" and self._selecting is not None:
            head = response.raw[:200].upper()
            at = head.find(b"[UIDVALIDITY ")
            if at >= 0:
                number = head[at + 13 :].split(b"]", 1)[0]
                if number.isdigit():
                    self._selecting_validity = int(number)
        if response.kind is ResponseKind.UNTAGGED and response.word == "PREAUTH":
            self.authenticated = True
        if response.kind is not ResponseKind.TAGGED:
            return
        tag = response.tag
        if self._selecting is not None and self._selecting[0] == tag:
            if response.word == "OK":
                self.mailbox, self.uidvalidity = self._selecting[1], self._selecting_validity
            self._selecting, self._selecting_validity = None, None
        if tag == self._auth_tag:
            self.authenticated = response.word == "OK"
            if not self.authenticated:
                self.user = None
            self._auth_tag = None

    def _user_from_sasl(self, encoded: bytes) -> None:
        """The user of a PLAIN, XOAUTH2 or OAUTHBEARER response, if any.

        Other mechanisms leave the user unknown, and then nothing is cached across sessions.
        """
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except ValueError:
            return
        if self._mechanism == b"PLAIN" and decoded.count(b"\0") == 2:
            # authzid NUL authcid NUL password (RFC 4616): the mailboxes seen are the
            # authorization identity's when one is given (a master login acting for a user).
            authzid, authcid, _ = decoded.split(b"\0")
            self.user = (authzid or authcid).decode("utf-8", "replace")
        elif self._mechanism in (b"XOAUTH2", b"OAUTHBEARER"):
            for item in decoded.replace(b",", b"\x01").split(b"\x01"):
                if item.startswith(b"user=") or item.startswith(b"a="):
                    self.user = item.split(b"=", 1)[1].decode("utf-8", "replace")
                    return


def _first_argument(command: Command) -> bytes | None:
    """The first argument (an atom, quoted string or literal) as bytes."""
    try:
        node = Lexer(command.raw, command.args_at).read_node()
    except RemoteProtocolError:
        return None
    return None if node.kind is NodeKind.LIST else node.value
