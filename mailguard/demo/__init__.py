"""The built-in demo: a small local POP3/IMAP server holding a sample mailbox with infected mail.

``mailguard demo`` puts the filtering engine in front of it and fetches every message through it
with the standard library's poplib and imaplib. Everything listens on 127.0.0.1 ephemeral ports
and nothing needs root, Dovecot or a network.
"""
