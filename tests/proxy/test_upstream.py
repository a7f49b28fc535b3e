"""The server leg: what of the server's certificate may shape our leaves."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.proxy.upstream import upstream_certificate


@dataclass
class FakeSSLObject:
    der: bytes

    def getpeercert(self, binary_form: bool = False) -> bytes:
        assert binary_form
        return self.der


@dataclass
class FakeLeg:
    ssl: FakeSSLObject | None
    certificate_problems: tuple[str, ...] = ()

    def ssl_object(self) -> FakeSSLObject | None:
        return self.ssl


def test_a_verified_certificate_lends_its_names():
    assert upstream_certificate(FakeLeg(FakeSSLObject(b"der"))) == b"der"


def test_a_certificate_let_through_by_policy_lends_no_names():
    """certificate-validity = allow: the connection goes on, but an attacker's certificate must not
    choose the names our CA signs for the client (docs/pitfalls.md#verifying-the-server)."""
    assert upstream_certificate(FakeLeg(FakeSSLObject(b"der"), ("wrong-host",))) is None


def test_a_plain_leg_has_no_certificate():
    assert upstream_certificate(FakeLeg(None)) is None
