from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailguard.tls.naming import (
    hostname_matches, name_set_key, normalise_constraint, normalise_dns_name, normalise_names, permitted_by,
)


@pytest.mark.parametrize(("raw", "normal"), [
    ("IMAP.Example.COM.", "imap.example.com"),
    ("*.example.com", "*.example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("", None), ("a..b", None), ("-a.example", None), ("a_b.example", None), ("*.com", None),
    ("*foo.example.com", None), ("a." * 130 + "com", None), ("127.0.0.1", None),
])
def test_normalise_dns_name(raw, normal):
    assert normalise_dns_name(raw) == normal


def test_normalise_names_keeps_order_drops_junk_and_duplicates():
    assert normalise_names(["B.example", "b.example.", "bad name", "[::1]", "10.0.0.1", "a.example"]) == [
        "b.example", "::1", "10.0.0.1", "a.example",
    ]


def test_cache_key_is_full_sha256_of_the_sorted_set():
    assert name_set_key(["b", "a"]) == name_set_key(["a", "b", "a"])
    assert name_set_key(["a"]) != name_set_key(["a", "b"])
    assert len(name_set_key(["a"])) == 64


@given(st.lists(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True), min_size=1, max_size=5),
       st.lists(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True), min_size=1, max_size=5))
def test_cache_keys_differ_exactly_when_name_sets_differ(first, second):
    assert (name_set_key(first) == name_set_key(second)) == (set(first) == set(second))


@pytest.mark.parametrize(("host", "dns", "ips", "match"), [
    ("imap.example.com", ["IMAP.example.com"], [], True),
    ("imap.example.com", ["*.example.com"], [], True),
    ("a.b.example.com", ["*.example.com"], [], False),      # one label only (RFC 6125 §6.4.3)
    ("example.com", ["*.example.com"], [], False),
    ("imap.example.com", ["imap.example.org"], [], False),
    ("127.0.0.1", [], [ipaddress.ip_address("127.0.0.1")], True),
    ("127.0.0.1", ["127.0.0.1"], [], False),                 # IPs match iPAddress entries only
    ("::1", [], [ipaddress.ip_address("::1")], True),
    ("imap.example.com", [], [], False),
])
def test_hostname_matches(host, dns, ips, match):
    assert hostname_matches(host, dns, ips) is match


def test_name_constraints():
    assert normalise_constraint("Example.COM") == "example.com"
    assert normalise_constraint(".example.com") == ".example.com"
    assert normalise_constraint("*.example.com") is None
    constraints = ["example.com", ".example.org"]
    assert permitted_by("example.com", constraints)
    assert permitted_by("imap.example.com", constraints)
    assert permitted_by("*.example.com", constraints)
    assert permitted_by("imap.example.org", constraints)
    assert not permitted_by("example.org", constraints)      # leading dot: subdomains only
    assert not permitted_by("badexample.com", constraints)
    assert not permitted_by("www.bank.example", constraints)
    assert not permitted_by("127.0.0.1", constraints)
    assert permitted_by("anything.example", [])
