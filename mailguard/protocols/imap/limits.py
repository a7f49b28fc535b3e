"""Named caps on every IMAP buffer (docs/architecture.md#every-buffer-has-a-cap).

Literal sizes are attacker-controlled ``number64`` values (RFC 9051 §4.3;
docs/pitfalls.md#imap-literal-sizes): a peer that announces more than a cap is refused before a
single byte of the literal is read, so a hostile client or a MitM'd server cannot make us buffer
without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class ImapLimits:
    #: One line of a client command, up to its CRLF or literal announcement.
    max_command_line: int = 64 * KiB
    #: One literal inside a client command other than APPEND (LOGIN passwords, mailbox names).
    max_command_literal: int = 64 * KiB
    #: The message literal of an APPEND; bounded in memory, refused above with ``NO [TOOBIG]``.
    max_append_literal: int = 100 * MiB
    #: A whole client command: every line and literal together.
    max_command_size: int = 100 * MiB + 64 * KiB
    #: One line of a server response (long BODYSTRUCTURE lines of many-part messages fit).
    max_response_line: int = 4 * MiB
    #: One literal in a server response: a whole message fetched for scanning.
    max_response_literal: int = 200 * MiB
    #: A whole server response: every line and literal together.
    max_response_size: int = 200 * MiB + 4 * MiB
    #: Continuation lines sent by the client (IDLE's DONE, SASL responses).
    max_continuation_line: int = 64 * KiB


DEFAULT_LIMITS = ImapLimits()
