"""The settings registry: every key (docs/settings.md), its type, default and help, in one place.

This one table drives validation, the ``config`` commands, ``--help``, the man page and
the shell completions and docs/settings.md. Key names are public interface: rename nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailguard.settings.types import (
    AddressList,
    Bool,
    BoolOrAuto,
    Duration,
    Enum,
    HostPort,
    Int,
    PathList,
    PathValue,
    Ports,
    Routes,
    Size,
    StrList,
    ValueType,
)

EMAIL_CLIENT = "web-and-email.email-client"
PROTOCOLS = ("imap", "imaps", "pop3", "pop3s")


@dataclass(frozen=True)
class Setting:
    key: str
    type: ValueType
    default: Any
    help: str

    def parse(self, value: Any) -> Any:
        return self.type.parse(value)

    def format(self, value: Any) -> str:
        return self.type.format(value)


# Outlook's level-1 list ("Blocked attachments in Outlook", Microsoft support): file types that
# run code when opened, which Outlook never lets a user open from mail. Lower case, no dot.
OUTLOOK_BLOCKED_TYPES = (
    "ade", "adp", "app", "appcontent-ms", "application", "appref-ms", "asp", "aspx", "asx", "bas", "bat",
    "bgi", "cab", "cdxml", "cer", "chm", "cmd", "cnt", "com", "cpl", "crt", "csh", "der", "diagcab", "exe",
    "fxp", "gadget", "grp", "hlp", "hpj", "hta", "htc", "inf", "ins", "isp", "its", "jar", "jnlp", "js",
    "jse", "ksh", "lnk", "mad", "maf", "mag", "mam", "maq", "mar", "mas", "mat", "mau", "mav", "maw", "mcf",
    "mda", "mdb", "mde", "mdt", "mdw", "mdz", "msc", "msh", "msh1", "msh1xml", "msh2", "msh2xml", "mshxml",
    "msi", "msp", "mst", "msu", "ops", "osd", "pcd", "pif", "pl", "plg", "prf", "prg", "printerexport",
    "ps1", "ps1xml", "ps2", "ps2xml", "psc1", "psc2", "psd1", "psdm1", "pssc", "pst", "py", "pyc", "pyo",
    "pyw", "pyz", "pyzw", "reg", "scf", "scr", "sct", "settingcontent-ms", "shb", "shs", "theme", "tmp",
    "udl", "url", "vb", "vbe", "vbp", "vbs", "vhd", "vhdx", "vsmacros", "vsw", "webpnp", "website", "ws",
    "wsb", "wsc", "wsf", "wsh", "xbap", "xll", "xnk",
)
#: Program files Outlook's list leaves out that mailguard's name heuristic flagged before this
#: policy replaced it: a PowerShell module, VBScript, libraries and drivers (code Windows loads).
ADDED_BLOCKED_TYPES = ("dll", "ocx", "psm1", "sys", "vbscript")
#: the default of blocked-attachment-types
DEFAULT_BLOCKED_TYPES = tuple(sorted(OUTLOOK_BLOCKED_TYPES + ADDED_BLOCKED_TYPES))
_LIMITS = "web-and-email.protocol-filtering.limits."


def _ec(suffix: str) -> str:
    return f"{EMAIL_CLIENT}.{suffix}"


_SETTINGS = [
    Setting("web-and-email.protocol-filtering.enabled", Bool(), True,
            "Master switch for interception. Off: listeners relay bytes untouched."),
    Setting("web-and-email.protocol-filtering.mode", Enum(choices=("explicit", "transparent")), "explicit",
            "explicit: clients connect to the routes listeners. transparent (Linux, root): connections "
            "redirected by the firewall arrive on transparent.listen and their original destination is "
            "read from the socket."),
    Setting("web-and-email.protocol-filtering.routes", Routes(), [],
            "Explicit-mode listeners, LISTEN=UPSTREAM, e.g. 127.0.0.1:1993=imap.example.com:993. "
            "Implicit TLS is used when the upstream port is in the imaps or pop3s port list."),
    Setting("web-and-email.protocol-filtering.transparent.listen", HostPort(), "127.0.0.1:8143",
            "Where redirected connections arrive in transparent mode: loopback (127.0.0.1, [::1]) or "
            "every address (0.0.0.0, [::]), each in IPv4 and IPv6 alike; only redirected connections "
            "may reach it."),
    Setting("web-and-email.protocol-filtering.transparent.role", Enum(choices=("desktop", "gateway", "both")),
            "desktop",
            "Which connections transparent mode redirects: desktop = those this host opens, gateway = "
            "those it forwards for other machines (needs transparent.listen on 0.0.0.0), both."),
    Setting("web-and-email.protocol-filtering.unrecognized", Enum(choices=("block", "relay")), "block",
            "A connection on a port that is in no protocol's port list, whose server does not greet "
            "as a POP3 or IMAP server (or whose client speaks first, or that stays silent): block = "
            "close it, relay = pass its bytes unscanned. Either way it is logged as a warning and "
            "counted (status: unrecognized). On the ports in the lists the protocol is known and a "
            "session that does not follow it is refused, never relayed."),
    Setting("web-and-email.protocol-filtering.excluded-ips", AddressList(), [],
            "Traffic to or from these IPs, CIDR networks or A-B ranges is relayed without scanning."),
    # Limits on what sessions may cost (docs/settings.md): defaults a desktop and a small-office
    # gateway both live with; what happens at each is logged and counted in `status --json`.
    Setting(_LIMITS + "max-sessions", Int(minimum=1, maximum=1_000_000), 1000,
            "Most sessions open at once; a client over it is refused (POP3 -ERR [SYS/TEMP], IMAP "
            "* BYE [UNAVAILABLE]) and counted as refused."),
    Setting(_LIMITS + "max-sessions-per-client", Int(minimum=1, maximum=1_000_000), 100,
            "Most sessions open at once from one client address; refused as max-sessions."),
    Setting(_LIMITS + "login-timeout", Duration(), 120.0,
            "A client that has not logged in this long after the server greeted it is told and "
            "disconnected (counted as timed out)."),
    Setting(_LIMITS + "server-timeout", Duration(), 120.0,
            "A server silent this long in the middle of an answer, or while an answer is due, ends the "
            "session; the client is told where the protocol allows (counted as timed out)."),
    Setting(_LIMITS + "max-session-buffer", Size(minimum=16 * 1024), 256 * 1024,
            "Bytes one session reads from a peer ahead of the other peer taking them, per direction; "
            "reading stops there until the other side catches up. A message held whole for scanning is "
            "bounded by threatsense.limits.max-object-size instead."),
    Setting(_LIMITS + "max-message-size", Size(), 1024**3,
            "Largest message passed on at all: one over max-object-size is streamed unscanned (or "
            "refused) up to this size; an answer past it ends the session."),
    Setting(_ec("protocols.enabled"), Bool(), True,
            "Email protection by protocol filtering. Off: mail is relayed unscanned, never blocked. "
            "'mailguard enable' and 'mailguard disable' set it."),
    Setting(_ec("protocols.imap.enabled"), Bool(), True, "IMAP scanning."),
    Setting(_ec("protocols.imap.ports"), Ports(), [143],
            "Plaintext IMAP ports: taken in transparent mode, and spoken as IMAP whatever the server's "
            "greeting says; on ports in no list the protocol is recognised from the greeting."),
    Setting(_ec("protocols.imaps.enabled"), Bool(), True, "IMAPS scanning (needs ssl-tls.enabled)."),
    Setting(_ec("protocols.imaps.ports"), Ports(), [585, 993],
            "Implicit-TLS IMAP ports; TLS on other ports is not intercepted."),
    Setting(_ec("protocols.pop3.enabled"), Bool(), True, "POP3 scanning."),
    Setting(_ec("protocols.pop3.ports"), Ports(), [110],
            "Plaintext POP3 ports: taken in transparent mode, and spoken as POP3 whatever the server's "
            "greeting says."),
    Setting(_ec("protocols.pop3s.enabled"), Bool(), True, "POP3S scanning (needs ssl-tls.enabled)."),
    Setting(_ec("protocols.pop3s.ports"), Ports(), [995], "Implicit-TLS POP3 ports."),
    Setting(_ec("alerts.tag-received"), Enum(choices=("never", "infected", "all")), "infected",
            "Which received messages get the X-MailGuard-Result header (unscanned ones always do)."),
    Setting(_ec("alerts.subject-received"), Bool(), True, "Prefix the subject of infected messages."),
    Setting(_ec("alerts.subject-template"), ValueType(), "[detection %DETECTIONNAME%]",
            "The subject prefix; %DETECTIONNAME% (alias %VIRUSNAME%) becomes the detection names."),
    Setting(_ec("response.action"), Enum(choices=("none", "clean", "replace")), "clean",
            "none: deliver unchanged apart from tags. clean: replace each infected part with a short text "
            "notice. replace: replace the whole message with a notice keeping From, To, Cc, Date, Subject "
            "and Message-ID."),
    Setting(_ec("response.quarantine"), Bool(), True,
            "Keep the original of every message that was changed or replaced."),
    Setting(_ec("response.on-scan-error"), Enum(choices=("pass", "block")), "pass",
            "A message that could not be fully scanned: pass = deliver tagged unscanned; block = treat as "
            "infected."),
    Setting(_ec("threatsense.objects.archives"), Bool(), True, "Look inside zip, 7z, tar, gzip, bzip2, xz."),
    Setting(_ec("threatsense.objects.email-files"), Bool(), True,
            "Look inside attached messages (message/rfc822, .eml)."),
    Setting(_ec("threatsense.options.heuristics"), Bool(), True,
            "Flag executable content (PE, ELF, Mach-O, shortcuts), double extensions and Office macros."),
    Setting(_ec("threatsense.options.blocked-attachment-types"), StrList(), list(DEFAULT_BLOCKED_TYPES),
            "File extensions (without the dot) of attachments blocked by policy whatever the content, "
            "reported as Policy.BlockedAttachment.EXT, apart from detections. Attachments only: the "
            "message's parts and those of messages attached to it, not archive members (as Outlook). "
            "Default: Outlook's level-1 list and dll, ocx, psm1, sys, vbscript; empty: block no "
            "attachment by its name."),
    Setting(_ec("threatsense.limits.max-object-size"), Size(), 100 * 1024**2,
            "Larger objects are not scanned (verdict unscanned)."),
    Setting(_ec("threatsense.limits.max-scan-time"), Duration(), 60.0, "Scan time limit per message."),
    Setting(_ec("threatsense.limits.archive-nesting-level"), Int(minimum=0, maximum=100), 10,
            "How deep archives and attached messages are opened."),
    Setting(_ec("threatsense.limits.max-archive-file-size"), Size(), 100 * 1024**2,
            "Limit per unpacked archive member; also bounds the total unpacked bytes per message."),
    Setting("web-and-email.ssl-tls.enabled", Bool(), True,
            "Intercept implicit TLS on the imaps/pop3s ports and STARTTLS/STLS anywhere. Off: TLS is "
            "relayed untouched, unscanned."),
    Setting("web-and-email.ssl-tls.block-obsolete", Bool(), True,
            "Refuse SSL 3, TLS 1.0 and TLS 1.1 on both legs."),
    Setting("web-and-email.ssl-tls.certificate-validity.unverifiable", Enum(choices=("block", "allow")),
            "block", "An upstream certificate that does not chain to a trusted root."),
    Setting("web-and-email.ssl-tls.certificate-validity.corrupted", Enum(choices=("block", "allow")),
            "block", "An upstream certificate that is expired, not yet valid, for another host or malformed."),
    Setting("web-and-email.ssl-tls.excluded-domains", StrList(), [],
            "Host globs never intercepted: relayed as they are, unscanned."),
    Setting("web-and-email.ssl-tls.trusted-ca-file", PathValue(), "",
            "Extra PEM bundle trusted for upstream servers, besides the system store."),
    Setting("web-and-email.ssl-tls.root-certificate.name-constraints", StrList(), [],
            "DNS names 'ca init' and 'ca rotate' put into the CA as X.509 permitted subtrees."),
    Setting("detection-engine.signatures.paths", PathList(), [],
            "ClamAV-format signature files or folders (.hdb, .hsb, .ndb) loaded besides the built-in "
            "EICAR signature."),
    Setting("detection-engine.yara.rules", PathList(), [],
            "YARA rule files or folders (needs the 'yara' extra: pip install mailguard[yara])."),
    Setting("detection-engine.clamd.enabled", BoolOrAuto(), "auto",
            "Also ask a running clamd (ClamAV's daemon, with freshclam's signatures). auto: when its socket "
            "answers at clamd.address (left at the default: also where Debian, Fedora and Arch put it), "
            "looked for at start, at reload and every minute; else run without it and say so."),
    Setting("detection-engine.clamd.address", ValueType(), "unix:/var/run/clamav/clamd.ctl",
            "clamd's socket: unix:PATH or tcp:HOST:PORT. Left at the default, auto also looks at "
            "/run/clamav/clamd.ctl and /run/clamd.scan/clamd.sock (Fedora); a set address alone is looked at."),
    Setting("detection-engine.signatures.max-age", Duration(), 3 * 86400.0,
            "'mailguard status' warns when the newest signatures are older than this."),
    Setting("detection-engine.rescan-after-update", Bool(), True,
            "Repeat scan after update: a message fetched again over IMAP after the signatures changed "
            "is scanned again instead of served from the verdict cache."),
    Setting("tools.quarantine.path", PathValue(), "",
            "Quarantine folder; empty means STATE/quarantine."),
    Setting("tools.log-files.level", Enum(choices=("debug", "info", "warning", "error")), "info",
            "Log level of the filtering engine."),
    Setting("tools.log-files.format", Enum(choices=("text", "json")), "text",
            "Log format of the filtering engine: text lines or JSON lines."),
]

REGISTRY: dict[str, Setting] = {s.key: s for s in _SETTINGS}


def port_list_key(protocol: str) -> str:
    return _ec(f"protocols.{protocol}.ports")


# The protocol a well-known port belongs to, for `mailguard ports add PORT` without --protocol.
WELL_KNOWN_PORTS = {143: "imap", 993: "imaps", 585: "imaps", 110: "pop3", 995: "pop3s"}


def lookup(key: str) -> Setting:
    """The setting for ``key``; a ``KeyError`` whose text suggests the nearest keys."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(unknown_key_message(key)) from None


def unknown_key_message(key: str) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, REGISTRY, n=3, cutoff=0.6)
    if not close:
        # People often type the last words only ("imaps.ports"): match on the ending too.
        close = [k for k in REGISTRY if k.endswith("." + key) or k.endswith(key)][:3]
    hint = f"; did you mean {' or '.join(close)}?" if close else "; 'mailguard config list' shows every key"
    return f"unknown key {key!r}{hint}"
