"""Reading one POP3 client command: which ones may pass, what their answers look like, and
what goes upstream in their place (RFC 1939 §5–§7, RFC 2449, RFC 5034).

``read_command`` either returns the ``Pending`` command to forward or the ``-ERR`` line the
proxy answers itself: a command whose answer we could not frame must never reach the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.protocols.pop3_capa import sasl_allowed
from mailguard.protocols.pop3_states import ALLOWED_COMMANDS, State

__all__ = ["TOP_WHOLE_MESSAGE", "Pending", "is_multiline", "message_number", "read_command"]

# The count sent upstream for any TOP: larger than any body, and still a positive 32-bit int
# for servers that parse it as one. RFC 1939 §7 makes it the entire message.
TOP_WHOLE_MESSAGE = 2**31 - 1


@dataclass
class Pending:
    """The command whose answer the machine waits for."""

    verb: str
    args: list[bytes]
    multiline: bool
    number: int = 0
    top_lines: int = 0
    #: What goes upstream (the client's line, or its rewrite).
    forward: bytes = b""


def is_multiline(verb: str, args: list[bytes]) -> bool:
    if verb in ("CAPA", "RETR", "TOP"):
        return True
    # LIST and UIDL answer a listing only without an argument (RFC 1939 §5, §7); so does a bare
    # AUTH on servers that list their mechanisms that way (pre-RFC 5034 drafts, Dovecot).
    return verb in ("LIST", "UIDL", "AUTH") and not args


def message_number(arg: bytes) -> int | None:
    return int(arg) if arg.isdigit() and 0 < len(arg) <= 9 and int(arg) > 0 else None


def read_command(line: bytes, state: State, *, stls_available: bool) -> Pending | bytes:
    """The command to forward, or the ``-ERR`` line (without CRLF) to answer locally.

    Lines with a CR or NUL inside are refused: a server that ends lines at a bare CR would see
    two commands where we saw one. STLS comes back as a ``Pending`` only when ``stls_available``.
    """
    if b"\r" in line or b"\0" in line:
        return b"-ERR mailguard: CR or NUL inside a command line"
    verb_bytes, _, rest = line.partition(b" ")
    verb = verb_bytes.decode("ascii", "replace").upper()
    args = rest.split()
    if verb not in ALLOWED_COMMANDS.get(state, frozenset()):
        return b"-ERR mailguard: command not available here"
    pending = Pending(verb, args, is_multiline(verb, args), forward=line + b"\r\n")
    if verb in ("RETR", "TOP"):
        number = message_number(args[0]) if args else None
        if number is None or (verb == "RETR" and len(args) != 1):
            return b"-ERR mailguard: a message number is required"
        pending.number = number
        if verb == "TOP":
            if len(args) != 2 or not args[1].isdigit() or len(args[1]) > 9:
                return b"-ERR mailguard: TOP needs a message number and a line count"
            pending.top_lines = int(args[1])
            pending.forward = b"TOP %d %d\r\n" % (number, TOP_WHOLE_MESSAGE)
    elif verb == "AUTH" and args and not sasl_allowed(args[0].decode("ascii", "replace")):
        return b"-ERR [AUTH] mailguard: this SASL mechanism cannot be proxied"
    elif verb == "STLS" and not stls_available:
        return b"-ERR mailguard: STLS not available"
    return pending
