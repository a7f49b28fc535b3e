"""Which client commands may reach the server, state by state (default deny), sans I/O.

A command the proxy does not understand could make the server send what the proxy cannot
check: message text under another name (URLFETCH, RFC 4467; FETCH PREVIEW, RFC 8970), or a
change of syntax for the rest of the session (COMPRESS, NOTIFY). So only the commands of
RFC 9051 and of the extensions we offer (capabilities.py) pass, each in the states where
RFC 9051 §6 allows it; anything else is answered ``BAD`` by the proxy and never sent on.

The session's state follows the server's tagged answers. A client may pipeline (RFC 9051
§5.5): LOGIN then SELECT then FETCH, all before the first answer. A command is therefore
allowed when it is valid in any state the session *may* be in once the commands in flight are
answered; the server still enforces its own state, the proxy only keeps out what it does not
know.
"""

from __future__ import annotations

import enum
import re

from mailguard.protocols.imap import capabilities as caps
from mailguard.protocols.imap.fetch import FetchRequest


class State(enum.Enum):
    """RFC 9051 §3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


#: RFC 9051 §6.1: valid in every state; ID (RFC 2971 §3.1) too
ANY_STATE = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})

#: RFC 9051 §6.2, and §6.3 plus the extensions' commands of that state
_AUTHENTICATED = ANY_STATE | {
    "ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
    "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE",
    "GETQUOTA", "GETQUOTAROOT", "SETQUOTA",                        # QUOTA, RFC 9208
    "GETACL", "SETACL", "DELETEACL", "LISTRIGHTS", "MYRIGHTS",     # ACL, RFC 4314
    "RLIST", "RLSUB",                                              # MAILBOX-REFERRALS, RFC 2193
    "ESEARCH",                                                     # MULTISEARCH, RFC 7377
}

COMMANDS: dict[State, frozenset[str]] = {
    State.NOT_AUTHENTICATED: ANY_STATE | {"STARTTLS", "AUTHENTICATE", "LOGIN"},
    State.AUTHENTICATED: frozenset(_AUTHENTICATED),
    # RFC 9051 §6.4 (CHECK: RFC 3501 §6.4.1), and the selected-state extensions
    State.SELECTED: frozenset(_AUTHENTICATED | {
        "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "CHECK",
        "SORT", "THREAD", "CANCELUPDATE",
        "UID FETCH", "UID STORE", "UID COPY", "UID MOVE", "UID SEARCH", "UID EXPUNGE",
        "UID SORT", "UID THREAD",
    }),
    State.LOGOUT: frozenset(),
}

#: every command any state allows
KNOWN_COMMANDS = frozenset().union(*COMMANDS.values())

#: the commands each offered capability enables (capabilities.ALLOWED): a capability is
#: offered only when every one of them is in ``COMMANDS`` (tests/protocols/imap/test_allowlist.py)
CAPABILITY_COMMANDS: dict[str, frozenset[str]] = {
    "IMAP4REV1": frozenset({                                        # RFC 3501 §6
        "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE",
        "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND",
        "CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
        "UID FETCH", "UID STORE", "UID COPY", "UID SEARCH",
    }),
    "IMAP4REV2": frozenset({"ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "MOVE", "UID MOVE", "UID EXPUNGE"}),
    "IDLE": frozenset({"IDLE"}),
    "UIDPLUS": frozenset({"UID EXPUNGE"}),
    "MOVE": frozenset({"MOVE", "UID MOVE"}),
    "ENABLE": frozenset({"ENABLE"}),
    "NAMESPACE": frozenset({"NAMESPACE"}),
    "ID": frozenset({"ID"}),
    "UNSELECT": frozenset({"UNSELECT"}),
    "SORT": frozenset({"SORT", "UID SORT"}),
    "ESORT": frozenset({"SORT", "UID SORT"}),
    "THREAD=REFERENCES": frozenset({"THREAD", "UID THREAD"}),
    "THREAD=REFS": frozenset({"THREAD", "UID THREAD"}),
    "THREAD=ORDEREDSUBJECT": frozenset({"THREAD", "UID THREAD"}),
    "QUOTA": frozenset({"GETQUOTA", "GETQUOTAROOT", "SETQUOTA"}),
    "ACL": frozenset({"GETACL", "SETACL", "DELETEACL", "LISTRIGHTS", "MYRIGHTS"}),
    "MAILBOX-REFERRALS": frozenset({"RLIST", "RLSUB"}),
    "MULTISEARCH": frozenset({"ESEARCH"}),
    "CONTEXT=SEARCH": frozenset({"CANCELUPDATE"}),
    "CONTEXT=SORT": frozenset({"CANCELUPDATE"}),
    "STARTTLS": frozenset({"STARTTLS"}),
}
#: the offered capabilities that enable no command: they change arguments or answers of the
#: commands above (every one in capabilities.ALLOWED is in one of the two tables)
CAPABILITY_ARGUMENTS = frozenset({
    "LITERAL+", "LITERAL-", "CONDSTORE", "SPECIAL-USE", "CREATE-SPECIAL-USE", "SASL-IR",
    "LOGINDISABLED", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "WITHIN",
    "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "STATUS=SIZE", "MULTIAPPEND", "LOGIN-REFERRALS",
    "BINARY", "OBJECTID", "SAVEDATE", "I18NLEVEL=1", "RIGHTS=TEKX", "LIST-MYRIGHTS", "NO_ATOMIC_RENAME",
})

#: FETCH data items a client may ask for (RFC 9051 §6.4.5; MODSEQ: RFC 7162 §3.1.4; EMAILID,
#: THREADID: RFC 8474 §5; SAVEDATE: RFC 8514 §4.3); PREVIEW (RFC 8970) is not among them: it is
#: message text the proxy would have to cut from the scanned copy, and it is not offered
FETCH_ITEMS = frozenset({
    "FLAGS", "INTERNALDATE", "UID", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "BODY.PEEK",
    "BINARY", "BINARY.PEEK", "BINARY.SIZE", "RFC822", "RFC822.PEEK", "RFC822.HEADER", "RFC822.TEXT",
    "MODSEQ", "EMAILID", "THREADID", "SAVEDATE",
})
#: the items that take a section, and those of them that need one
_SECTIONED = frozenset({"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})
_SECTION_NEEDED = frozenset({"BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})
_SEQ_NUMBER = rb"(?:[1-9][0-9]{0,9}|\*)"
_SEQ_RANGE = _SEQ_NUMBER + rb"(?::" + _SEQ_NUMBER + rb")?"
_SEQUENCE_SET = re.compile(rb"^" + _SEQ_RANGE + rb"(?:," + _SEQ_RANGE + rb")*$")
#: the only FETCH modifier of an offered extension: CONDSTORE's (RFC 7162 §3.1.4.1)
_MODIFIERS = re.compile(rb"^(?:\((?i:CHANGEDSINCE) [0-9]{1,20}\))?$")


class SessionStates:
    """The state a session is in, and those it may be in once the commands in flight are answered."""

    def __init__(self, state: State = State.NOT_AUTHENTICATED) -> None:
        self.state = state
        #: tag -> (the state its OK leads to, the state its NO/BAD leaves)
        self._pending: dict[bytes, tuple[State, State | None]] = {}

    def possible(self) -> set[State]:
        found = {self.state}
        for ok, failed in self._pending.values():
            found.add(ok)
            if failed is not None:
                found.add(failed)
        return found

    def sent(self, tag: bytes, name: str) -> None:
        """``name`` went to the server under ``tag``."""
        if name in ("LOGIN", "AUTHENTICATE"):
            self._pending[tag] = (State.AUTHENTICATED, None)
        elif name in ("SELECT", "EXAMINE"):
            # RFC 9051 §6.3.2: a SELECT that fails leaves no mailbox selected
            self._pending[tag] = (State.SELECTED, State.AUTHENTICATED)
        elif name in ("CLOSE", "UNSELECT"):
            self._pending[tag] = (State.AUTHENTICATED, None)
        elif name == "LOGOUT":
            self._pending[tag] = (State.LOGOUT, None)

    def completed(self, tag: bytes, ok: bool) -> None:
        """The server's tagged answer for ``tag``."""
        found = self._pending.pop(tag, None)
        if found is None:
            return
        after = found[0] if ok else found[1]
        if after is not None and self.state is not State.LOGOUT:
            self.state = after

    def preauthenticated(self) -> None:
        """RFC 9051 §7.1.4: a PREAUTH greeting starts in the authenticated state."""
        self.state = State.AUTHENTICATED

    def bye(self) -> None:
        self.state = State.LOGOUT


def refusal(name: str, states: set[State]) -> bytes | None:
    """Why command ``name`` may not go on (a response text after the tag), or None."""
    if any(name in COMMANDS[state] for state in states):
        return None
    if name in KNOWN_COMMANDS:
        return b"BAD " + name.encode("ascii") + b" is not valid in this state\r\n"
    return b"BAD Command not available through this proxy\r\n"


def mechanism_refusal(args: bytes) -> bytes | None:
    """AUTHENTICATE with a mechanism we do not offer (a security layer would hide the session)."""
    words = args.split()
    mechanism = words[0].decode("ascii", "replace") if words else ""
    if mechanism.upper() in caps.ALLOWED_MECHANISMS:
        return None
    return b"NO Authentication mechanism not available through this proxy\r\n"


def fetch_refusal(request: FetchRequest) -> bytes | None:
    """Why a FETCH may not go on: an item or modifier the proxy does not know, or malformed."""
    if not _SEQUENCE_SET.match(request.sequence_set):
        # RFC 9051 §9 sequence-set; "$" (SEARCHRES, RFC 5182) is not offered
        return b"BAD FETCH needs a sequence set of numbers\r\n"
    for att in request.atts:
        if att.name not in FETCH_ITEMS:
            return b"BAD FETCH item " + att.raw[:60] + b" not available through this proxy\r\n"
        if att.section is not None and att.name not in _SECTIONED:
            return b"BAD FETCH item " + att.raw[:60] + b" takes no section\r\n"
        if att.section is None and (att.name in _SECTION_NEEDED or att.origin is not None):
            return b"BAD FETCH item " + att.raw[:60] + b" needs a section\r\n"
    if not _MODIFIERS.match(request.modifiers):
        return b"BAD FETCH modifier not available through this proxy\r\n"
    return None


#: untagged responses a server may send (RFC 9051 §7, and the extensions' of the offered
#: capabilities); any other is dropped before the client sees it: a client library keeps
#: whatever literal it carries for the application
RESPONSES = frozenset({
    "OK", "NO", "BAD", "BYE", "PREAUTH", "CAPABILITY", "ENABLED", "LIST", "LSUB", "NAMESPACE",
    "STATUS", "ESEARCH", "SEARCH", "FLAGS", "EXISTS", "RECENT", "EXPUNGE", "FETCH",
    "ID",                                             # RFC 2971
    "QUOTA", "QUOTAROOT",                             # RFC 9208
    "ACL", "LISTRIGHTS", "MYRIGHTS",                  # RFC 4314
    "SORT", "THREAD",                                 # RFC 5256
})


def unknown_response(word: str) -> bool:
    """An untagged response ``word`` that no command on the allow-list asks for (whether or not
    one is in flight)."""
    return word not in RESPONSES
