"""Value types: parsing what users write, and round trips through the canonical form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailguard.settings.types import (
    AddressList, Bool, Duration, HostPort, Int, Ports, Routes, Size, StrList, parse_hostport,
)


@pytest.mark.parametrize("text", ["true", "yes", "on", "1", "TRUE", " Yes "])
def test_bool_true_words(text):
    assert Bool().parse(text) is True


@pytest.mark.parametrize("text", ["false", "no", "off", "0", "Off"])
def test_bool_false_words(text):
    assert Bool().parse(text) is False


@pytest.mark.parametrize("text", ["", "maybe", "2", "truthy"])
def test_bool_rejects_other_words(text):
    with pytest.raises(ValueError, match="true/false"):
        Bool().parse(text)


@pytest.mark.parametrize("text,expected", [
    ("512", 512), ("512KB", 512 * 1024), ("100MB", 100 * 1024**2), ("1GiB", 1024**3), ("2 mb", 2 * 1024**2),
])
def test_size_units(text, expected):
    assert Size().parse(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "1.5MB", "-1", "10XB", "0"])
def test_size_rejects(text):
    with pytest.raises(ValueError):
        Size().parse(text)


@given(st.integers(min_value=1, max_value=2**40))
def test_size_round_trip(number):
    size = Size()
    assert size.parse(size.format(number)) == number
    assert size.parse(size.to_toml(number)) == number


@pytest.mark.parametrize("text,expected", [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("3d", 259200.0), (7, 7.0)])
def test_duration(text, expected):
    assert Duration().parse(text) == expected


@given(st.integers(min_value=1, max_value=10**6))
def test_duration_round_trip(seconds):
    assert Duration().parse(Duration().format(float(seconds))) == seconds


@pytest.mark.parametrize("text", ["0", "-5s", "5w", "soon"])
def test_duration_rejects(text):
    with pytest.raises(ValueError):
        Duration().parse(text)


def test_ports_accept_both_spellings_and_sort_unique():
    assert Ports().parse("993,585") == [585, 993]
    assert Ports().parse("585, 993, 585") == [585, 993]
    assert Ports().parse(["995", "110"]) == [110, 995]
    assert Ports().parse([993, 585]) == [585, 993]


@pytest.mark.parametrize("text", ["0", "65536", "http", "99999", "-1"])
def test_ports_out_of_range(text):
    with pytest.raises(ValueError, match="1–65535"):
        Ports().parse(text)


@given(st.lists(st.integers(min_value=1, max_value=65535), max_size=20))
def test_ports_round_trip(ports):
    typ = Ports()
    parsed = typ.parse(typ.format(sorted(set(ports)))) if ports else []
    assert parsed == sorted(set(ports))


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters=",", blacklist_categories=("Cs", "Zs", "Cc")),
                        min_size=1, max_size=12), max_size=8))
def test_list_round_trip(items):
    typ = StrList()
    assert typ.parse(typ.format(items)) == items


def test_int_range():
    assert Int(minimum=0, maximum=100).parse("10") == 10
    with pytest.raises(ValueError, match="between 0 and 100"):
        Int(minimum=0, maximum=100).parse("101")
    with pytest.raises(ValueError):
        Int().parse("ten")
    with pytest.raises(ValueError):
        Int().parse(True)


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8143", ("127.0.0.1", 8143)), ("[::1]:993", ("::1", 993)), ("imap.example.com:993", ("imap.example.com", 993)),
])
def test_hostport(text, expected):
    assert parse_hostport(text) == expected
    assert HostPort().parse(text) == text


@pytest.mark.parametrize("text", ["example.com", "host:0", "host:70000", ":993", "::1:993"])
def test_hostport_rejects(text):
    with pytest.raises(ValueError):
        parse_hostport(text)


def test_routes_need_listen_and_upstream():
    assert Routes().parse("127.0.0.1:1993=imap.example.com:993") == ["127.0.0.1:1993=imap.example.com:993"]
    with pytest.raises(ValueError, match="LISTEN=UPSTREAM"):
        Routes().parse("127.0.0.1:1993")
    with pytest.raises(ValueError):
        Routes().parse("127.0.0.1:1993=imap.example.com")


def test_address_list():
    assert AddressList().parse("10.0.0.0/8, 192.168.1.1, 10.1.1.1-10.1.1.9, ::1") == [
        "10.0.0.0/8", "192.168.1.1", "10.1.1.1-10.1.1.9", "::1"]
    for bad in ["10.0.0.300", "10.0.0.9-10.0.0.1", "10.0.0.1-::1", "host.example"]:
        with pytest.raises(ValueError):
            AddressList().parse(bad)


@pytest.mark.parametrize("text,expected", [("auto", "auto"), (" AUTO ", "auto"), ("on", True), ("false", False),
                                           (True, True), (False, False)])
def test_bool_or_auto(text, expected):
    from mailguard.settings.types import BoolOrAuto

    assert BoolOrAuto().parse(text) == expected
    assert BoolOrAuto().parse(BoolOrAuto().format(expected)) == expected


def test_bool_or_auto_rejects():
    from mailguard.settings.types import BoolOrAuto

    with pytest.raises(ValueError, match="expected auto"):
        BoolOrAuto().parse("maybe")
