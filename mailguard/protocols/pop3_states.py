"""The POP3 proxy's options, caps, states and the tables that drive it (RFC 1939 §3)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "ALLOWED_COMMANDS", "TRANSITIONS", "Phase", "Pop3Limits", "Pop3Options", "State", "TlsMode",
]


@dataclass(frozen=True)
class Pop3Limits:
    """Caps on everything the machine buffers; a peer going past one gets a clear error."""

    # RFC 2449 §4 says 255 octets for a command; real clients stay far below this.
    max_command_line: int = 8 * 1024
    # SASL responses (Kerberos tickets, OAuth tokens) are far longer than commands (RFC 5034 §4).
    max_sasl_line: int = 64 * 1024
    # RFC 2449 §4: 512 octets per response line; be lenient with verbose servers.
    max_status_line: int = 8 * 1024
    # LIST / UIDL / CAPA answers: 64 MiB is several million messages.
    max_listing: int = 64 * 1024 * 1024
    # A RETR/TOP message held for scanning (threatsense.limits.max-object-size).
    max_message: int = 100 * 1024 * 1024
    # Pipelined client bytes held while a command runs; the driver stops reading beyond this.
    max_client_backlog: int = 64 * 1024
    # Server bytes held while nothing is expected from it, or while streaming.
    max_server_backlog: int = 256 * 1024
    # A message over max_message is streamed (or drained) up to this size, then the session
    # ends: an answer that never ends must not be passed on forever (limits.max-message-size).
    max_stream: int = 1024**3


class TlsMode(str, enum.Enum):
    #: STLS terminated on both legs by the proxy (ssl-tls.enabled and a CA to mint leaves).
    INTERCEPT = "intercept"
    #: STLS passed to the server; after its +OK the session is relayed untouched (ssl-tls off).
    RELAY = "relay"
    #: STLS hidden from CAPA and refused.
    REFUSE = "refuse"


@dataclass(frozen=True)
class Pop3Options:
    tls: TlsMode = TlsMode.INTERCEPT
    #: Both legs already run TLS (implicit TLS, POP3S): STLS is neither offered nor accepted.
    implicit_tls: bool = False
    #: What to do with a message larger than ``limits.max_message``: "pass" (tagged) or "block".
    on_oversize: str = "pass"
    #: Messages fetched and scanned past the one the client is receiving (pop3_readahead); 0: none.
    read_ahead: int = 0
    limits: Pop3Limits = field(default_factory=Pop3Limits)


class State(str, enum.Enum):
    """The session states of RFC 1939 §3, plus the proxy's own end states."""

    GREETING = "greeting"
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    #: Handed over to a byte relay (STLS with TLS interception off).
    RELAYED = "relayed"
    CLOSED = "closed"


class Phase(str, enum.Enum):
    """What the machine waits for inside a state."""

    GREETING = "greeting"          # the server's first line
    COMMAND = "command"            # a client command
    STATUS = "status"              # the server's status line for the pending command
    BODY = "body"                  # a multi-line body
    SASL_CLIENT = "sasl-client"    # the client's answer to a SASL challenge
    SCAN = "scan"                  # the driver scans a message
    STREAM_PASS = "stream-pass"    # an oversize message streamed through, tagged
    STREAM_DROP = "stream-drop"    # an oversize message drained from the server, not delivered
    STLS_REPLY = "stls-reply"      # STLS sent upstream, waiting for +OK
    TLS_SERVER = "tls-server"      # upstream handshake running
    TLS_CLIENT = "tls-client"      # client handshake running
    AHEAD_SIZE = "ahead-size"      # the status line of our own LIST (pop3_readahead)
    AHEAD_LISTING = "ahead-listing"  # its scan listing
    AHEAD_STATUS = "ahead-status"  # the status line of our own read-ahead TOP
    AHEAD_BODY = "ahead-body"      # its body
    AHEAD_SCAN = "ahead-scan"      # the driver scans it
    AHEAD_DROP = "ahead-drop"      # too large to hold: drained and dropped
    DONE = "done"


# (state, command, server said +OK) -> new state. Everything else keeps the state.
TRANSITIONS: dict[tuple[State, str, bool], State] = {
    (State.GREETING, "<greeting>", True): State.AUTHORIZATION,
    (State.GREETING, "<greeting>", False): State.CLOSED,
    (State.AUTHORIZATION, "PASS", True): State.TRANSACTION,
    (State.AUTHORIZATION, "APOP", True): State.TRANSACTION,
    (State.AUTHORIZATION, "AUTH", True): State.TRANSACTION,
    (State.AUTHORIZATION, "QUIT", True): State.CLOSED,
    (State.AUTHORIZATION, "QUIT", False): State.CLOSED,
    # QUIT in TRANSACTION: the server enters UPDATE and closes (RFC 1939 §6).
    (State.TRANSACTION, "QUIT", True): State.CLOSED,
    (State.TRANSACTION, "QUIT", False): State.CLOSED,
}

ALLOWED_COMMANDS: dict[State, frozenset[str]] = {
    State.AUTHORIZATION: frozenset({"USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "QUIT"}),
    State.TRANSACTION: frozenset(
        {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"}
    ),
}
