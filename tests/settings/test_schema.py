"""The registry holds exactly the public contract of key names (docs/settings.md), with its defaults."""

from __future__ import annotations

from mailguard.settings import REGISTRY, Settings, lookup
from mailguard.settings.schema import DEFAULT_BLOCKED_TYPES
import pytest

EC = "web-and-email.email-client."

# The contract (docs/settings.md): key -> default, as a user would write it. Keys are never renamed.
CONTRACT = {
    "web-and-email.protocol-filtering.enabled": True,
    "web-and-email.protocol-filtering.mode": "explicit",
    "web-and-email.protocol-filtering.routes": [],
    "web-and-email.protocol-filtering.transparent.listen": "127.0.0.1:8143",
    "web-and-email.protocol-filtering.transparent.role": "desktop",
    "web-and-email.protocol-filtering.excluded-ips": [],
    "web-and-email.protocol-filtering.unrecognized": "block",
    "web-and-email.protocol-filtering.limits.max-sessions": 1000,
    "web-and-email.protocol-filtering.limits.max-sessions-per-client": 100,
    "web-and-email.protocol-filtering.limits.login-timeout": "2m",
    "web-and-email.protocol-filtering.limits.server-timeout": "2m",
    "web-and-email.protocol-filtering.limits.max-session-buffer": "256KB",
    "web-and-email.protocol-filtering.limits.max-message-size": "1GiB",
    EC + "protocols.enabled": True,
    EC + "protocols.imap.enabled": True,
    EC + "protocols.imap.ports": [143],
    EC + "protocols.imaps.enabled": True,
    EC + "protocols.imaps.ports": [585, 993],
    EC + "protocols.pop3.enabled": True,
    EC + "protocols.pop3.ports": [110],
    EC + "protocols.pop3s.enabled": True,
    EC + "protocols.pop3s.ports": [995],
    EC + "alerts.tag-received": "infected",
    EC + "alerts.subject-received": True,
    EC + "alerts.subject-template": "[detection %DETECTIONNAME%]",
    EC + "response.action": "clean",
    EC + "response.quarantine": True,
    EC + "response.on-scan-error": "pass",
    EC + "threatsense.objects.archives": True,
    EC + "threatsense.objects.email-files": True,
    EC + "threatsense.options.heuristics": True,
    EC + "threatsense.options.blocked-attachment-types": list(DEFAULT_BLOCKED_TYPES),  # issue 14
    EC + "threatsense.limits.max-object-size": "100MB",
    EC + "threatsense.limits.max-scan-time": "60s",
    EC + "threatsense.limits.archive-nesting-level": 10,
    EC + "threatsense.limits.max-archive-file-size": "100MB",
    "web-and-email.ssl-tls.enabled": True,
    "web-and-email.ssl-tls.block-obsolete": True,
    "web-and-email.ssl-tls.certificate-validity.unverifiable": "block",
    "web-and-email.ssl-tls.certificate-validity.corrupted": "block",
    "web-and-email.ssl-tls.excluded-domains": [],
    "web-and-email.ssl-tls.trusted-ca-file": "",
    "web-and-email.ssl-tls.root-certificate.name-constraints": [],
    "detection-engine.signatures.paths": [],
    "detection-engine.yara.rules": [],
    "detection-engine.clamd.enabled": "auto",  # issue 14: used when its socket answers
    "detection-engine.clamd.address": "unix:/var/run/clamav/clamd.ctl",
    "detection-engine.signatures.max-age": "3d",  # issue 14
    "detection-engine.rescan-after-update": True,  # issue 14
    "tools.quarantine.path": "",
    "tools.log-files.level": "info",
    "tools.log-files.format": "text",
}


def test_registry_is_the_contract():
    assert set(REGISTRY) == set(CONTRACT)


@pytest.mark.parametrize("key", sorted(CONTRACT))
def test_defaults_match_the_contract(key):
    setting = REGISTRY[key]
    assert setting.default == setting.parse(CONTRACT[key])
    assert setting.help, "every key documents itself (the man page is built from this)"


def test_defaults_pass_cross_checks():
    assert Settings.defaults().cross_check() == []


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(KeyError) as info:
        lookup("web-and-email.email-client.protocols.imaps.port")
    assert "did you mean web-and-email.email-client.protocols.imaps.ports" in info.value.args[0]


def test_unknown_key_suggests_by_ending():
    with pytest.raises(KeyError) as info:
        lookup("pop3s.ports")
    assert "web-and-email.email-client.protocols.pop3s.ports" in info.value.args[0]
