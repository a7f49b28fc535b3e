"""The application's error tree.

Every error a user can meet is a ``MailguardError``. The CLI maps these to exit
codes in exactly one place (``mailguard.cli.exitcodes``); library code never
calls ``sys.exit``. A peer that broke the rules raises ``RemoteProtocolError``;
a bug or misuse on our side is a ``LocalProtocolError`` (after h11).
"""

from __future__ import annotations


class MailguardError(Exception):
    """Base of every error meant for the user. The message is shown as is."""


class SettingsError(MailguardError):
    """The settings file or a value given for a key is not acceptable.

    ``problems`` lists every problem found, so ``config check`` can show them all.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class UsageError(MailguardError):
    """The command line asked for something that cannot be done as asked."""


class StorageError(MailguardError):
    """Reading or writing a file or folder of ours failed (permissions, disk, lock)."""


class ScanError(MailguardError):
    """The scanning engine could not be set up (bad signature file, missing extra)."""


class TLSSetupError(MailguardError):
    """The interception CA or a TLS context could not be created or loaded."""


class ServiceError(MailguardError):
    """Starting, stopping or talking to the running service (the user's "engine") failed."""


class RemoteProtocolError(MailguardError):
    """The peer (client or server) broke the protocol or exceeded a limit."""


class LocalProtocolError(MailguardError):
    """We were asked to do something the protocol state does not allow (a bug)."""
