"""What a server's FETCH data may carry to the client (fetch_filter.py), on plain bytes."""

from __future__ import annotations

import pytest

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.fetch_filter import AskedItems, filter_fetch
from mailguard.protocols.imap.fetch_response import parse_fetch_response
from mailguard.protocols.imap.responses import ResponseReader

TEXT = b"From: a\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n"


def _filter(raw: bytes, asked: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
    reader = ResponseReader()
    reader.receive_data(raw)
    response = reader.next_event()
    return filter_fetch(parse_fetch_response(response), asked)  # type: ignore[arg-type]


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_unsolicited_flags_modseq_and_uid_pass_byte_for_byte() -> None:
    raw = b"* 3 FETCH (UID 7 FLAGS (\\Seen $Junk \\*) MODSEQ (12))\r\n"
    assert _filter(raw).raw == raw and not _filter(raw).dropped


@pytest.mark.parametrize("item", [
    b"BODY.PEEK[] " + _literal(TEXT), b"RFC822.PEEK " + _literal(TEXT), b"BINARY.PEEK[] " + _literal(TEXT),
    b"BODY " + _literal(TEXT), b"X-EVIL " + _literal(TEXT), b"X-EVIL ~" + _literal(TEXT),
    b"BODY[] " + _literal(TEXT), b"RFC822 " + _literal(TEXT), b"PREVIEW " + _literal(TEXT),
    b"INTERNALDATE " + _literal(TEXT), b"BINARY.SIZE[] 5", b"RFC822.SIZE 5", b"ENVELOPE NIL",
])
def test_anything_else_nobody_asked_for_is_dropped_and_named(item: bytes) -> None:
    found = _filter(b"* 3 FETCH (UID 7 " + item + b" FLAGS ())\r\n")
    assert found.raw == b"* 3 FETCH (UID 7 FLAGS ())\r\n"
    assert len(found.dropped) == 1 and item.startswith(found.dropped[0][:5])


def test_a_response_left_with_nothing_is_dropped_whole() -> None:
    found = _filter(b"* 3 FETCH (X-EVIL " + _literal(TEXT) + b")\r\n")
    assert found.raw is None and found.dropped == (b"X-EVIL",)


@pytest.mark.parametrize("item", [
    b"FLAGS " + _literal(b"(x)"), b"FLAGS (\\Seen (nested))", b'FLAGS ("quoted")', b"UID 0", b"UID x",
    b"MODSEQ 5", b"FLAGS[] ()",
])
def test_allowed_items_in_a_shape_their_grammar_does_not_give_are_dropped(item: bytes) -> None:
    found = _filter(b"* 3 FETCH (UID 7 " + item + b")\r\n")
    assert found.raw == b"* 3 FETCH (UID 7)\r\n"


def test_the_items_a_relayed_fetch_asked_for_pass_while_it_is_in_flight() -> None:
    asked = AskedItems()
    asked.add(b"a", frozenset({"INTERNALDATE", "FLAGS", "BODY"}))  # BODY is never relayed: not metadata
    raw = b'* 1 FETCH (FLAGS () INTERNALDATE "17-Jul-1996 02:44:25 -0700" BODY ("text" "plain"))\r\n'
    found = _filter(raw, asked.names)
    assert found.raw == b'* 1 FETCH (FLAGS () INTERNALDATE "17-Jul-1996 02:44:25 -0700")\r\n'
    asked.done(b"a")
    assert _filter(raw, asked.names).raw == b"* 1 FETCH (FLAGS ())\r\n"


@pytest.mark.parametrize("after", [
    b" " + _literal(TEXT) + b"\r\n", b" ~" + _literal(TEXT) + b"\r\n", b" X\r\n", b" (BODY[] x)\r\n", b"x\r\n",
])
def test_data_after_the_fetch_list_is_a_protocol_error(after: bytes) -> None:
    # the list ends the response (RFC 9051 §7.5.2); imaplib would keep a literal after it as
    # the message data of an unscanned message
    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (UID 1)" + after)
    with pytest.raises(RemoteProtocolError, match="after the FETCH list"):
        parse_fetch_response(reader.next_event())  # type: ignore[arg-type]


def test_what_passes_is_built_from_the_items_kept_not_the_servers_line() -> None:
    found = _filter(b"* 3 FETCH (UID 7  FLAGS (\\Seen))   \r\n")
    assert found.raw == b"* 3 FETCH (UID 7 FLAGS (\\Seen))\r\n" and not found.dropped


def test_a_fetch_response_without_a_number_is_a_protocol_error() -> None:
    reader = ResponseReader()
    reader.receive_data(b"* FETCH (UID 1 FLAGS ())\r\n")
    with pytest.raises(RemoteProtocolError, match="without a message number"):
        parse_fetch_response(reader.next_event())  # type: ignore[arg-type]


def _data(raw: bytes):  # type: ignore[no-untyped-def]
    reader = ResponseReader()
    reader.receive_data(raw)
    return parse_fetch_response(reader.next_event())  # type: ignore[arg-type]


def test_a_rendered_answer_takes_only_flags_and_modseq_from_the_server_once_each() -> None:
    from mailguard.protocols.imap.fetch_filter import server_additions

    data = _data(b"* 1 FETCH (MODSEQ (5) X-EVIL " + _literal(TEXT) + b" RFC822.TEXT " + _literal(TEXT)
                 + b" FLAGS " + _literal(b"(x)") + b" FLAGS (\\Seen) FLAGS (\\Deleted))\r\n")
    assert [(i.key, i.raw_value) for i in server_additions(data, frozenset())] == [
        (b"MODSEQ", b"(5)"), (b"FLAGS", b"(\\Seen)")]
    assert [i.key for i in server_additions(data, frozenset({"FLAGS"}))] == [b"MODSEQ"]


def test_the_servers_metadata_is_taken_only_in_its_shape() -> None:
    from mailguard.protocols.imap.fetch_filter import server_value

    data = _data(b'* 1 FETCH (INTERNALDATE ' + _literal(TEXT) + b' ENVELOPE ' + _literal(TEXT)
                 + b' BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 5 1))\r\n')
    assert server_value(data, "INTERNALDATE") is None and server_value(data, "ENVELOPE") is None
    assert server_value(data, "BODYSTRUCTURE").raw_value.startswith(b'("text"')  # type: ignore[union-attr]


def test_long_echoed_item_names_are_parsed_not_remembered() -> None:
    # A valid name may be as long as a response line; the parsed-name cache is process-wide, so
    # remembering such names would let a server pin memory that is never freed.
    from mailguard.protocols.imap.fetch_response import REMEMBERED_ATT_MAX, _remembered_att

    _remembered_att.cache_clear()
    for n in range(50):
        field = b"X-%d-" % n + b"a" * 20_000
        found = _data(b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (" + field + b")] NIL)\r\n")
        assert found.items[1].name == "BODY" and found.items[1].sectioned
        assert found.items[1].key.endswith(field + b")]")
    remembered = _remembered_att.cache_info().currsize
    assert remembered == 1  # UID only
    _data(b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (" + b"a" * (REMEMBERED_ATT_MAX - 27) + b")] NIL)\r\n")
    assert _remembered_att.cache_info().currsize == 2
