"""mailguard: malware scanning for POP3 and IMAP mail, live and offline."""

__version__ = "0.1.0"
