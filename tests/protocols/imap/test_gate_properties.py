"""Properties of the gate over generated server responses: whatever a server puts in FETCH data
nobody asked for, the client gets at most UID, FLAGS and MODSEQ, never a literal; and whatever
literals a server announces anywhere, imaplib frames what the gate passes as the proxy did, so no
message text reaches it as FETCH data."""

from __future__ import annotations

import imaplib
import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.gate import Gate
from mailguard.protocols.imap.responses import NEED_DATA, ResponseReader

MARK = b"MESSAGE-TEXT-MARK"

names = st.sampled_from([
    b"UID", b"FLAGS", b"MODSEQ", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODYSTRUCTURE", b"BODY",
    b"BODY[]", b"BODY.PEEK[]", b"BODY[1.MIME]<0>", b"BINARY[1]", b"BINARY.PEEK[]", b"RFC822", b"RFC822.PEEK",
    b"RFC822.TEXT", b"PREVIEW", b"X-EVIL", b"EMAILID", b"SAVEDATE", b"uid", b"Flags",
])
values = st.one_of(
    st.integers(0, 2**40).map(lambda n: b"%d" % n),
    st.just(b"()"), st.just(b"(\\Seen $Junk)"), st.just(b"(7)"), st.just(b"NIL"),
    st.just(b'"01-Jan-2024 10:00:00 +0000"'), st.just(b'"' + MARK + b'"'),
    st.binary(max_size=40).map(lambda b: b"{%d}\r\n" % len(MARK + b) + MARK + b),
    st.binary(max_size=40).map(lambda b: b"~{%d}\r\n" % len(MARK + b) + MARK + b),
    st.just(b"(NIL {%d}\r\n" % len(MARK) + MARK + b")"),
)
#: message text as the payload of a literal, bare or dressed as a FETCH response: a client that
#: frames the literal otherwise than the proxy takes what follows for responses of their own
WRAPPED = b"\r\n* 1 FETCH (RFC822 {%d}\r\n" % len(MARK) + MARK + b")\r\n* OK z"
payloads = st.sampled_from([MARK, WRAPPED])
announcements = st.sampled_from([b"{%d}", b"{%d+}", b"~{%d}"])


@st.composite
def literal_tails(draw):  # type: ignore[no-untyped-def]
    """A literal announced at the end of a line, and its octets."""
    payload = draw(payloads)
    return b" " + draw(announcements) % len(payload) + b"\r\n" + payload


#: what may come after a FETCH list: its line end, text, a literal
trailers = st.one_of(st.just(b""), st.just(b" x"), literal_tails())
#: the heads of untagged responses the gate passes, status responses among them
heads = st.sampled_from([
    b"* OK hi", b"* NO [ALERT] x", b"* BAD", b"* BYE bye", b"* PREAUTH", b"* 3 OK", b'* LIST () "/"',
    b"* LSUB () \".\"", b"* STATUS", b"* SEARCH 1", b'* ID ("name"', b'* ESEARCH (TAG "A1")', b"* FLAGS ()",
    b"* CAPABILITY IMAP4rev1", b"* NAMESPACE", b"* QUOTA", b"* 2 EXISTS",
])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 99), st.lists(st.tuples(names, values), min_size=1, max_size=6), trailers)
def test_unsolicited_fetch_data_never_passes_a_literal_or_text(  # type: ignore[no-untyped-def]
        number: int, items, trailer: bytes) -> None:
    raw = b"* %d FETCH (" % number + b" ".join(name + b" " + value for name, value in items) + b")" + trailer + b"\r\n"
    reader = ResponseReader()
    reader.receive_data(raw)
    try:
        response = reader.next_event()
        assert response is not NEED_DATA
        passed = Gate().response(response)  # type: ignore[arg-type]
    except RemoteProtocolError:
        return  # malformed FETCH data ends the session: nothing reaches the client
    assert MARK not in passed.raw and b"{" not in passed.raw
    if passed.raw:
        again = ResponseReader()
        again.receive_data(passed.raw)
        reframed = again.next_event()
        assert reframed is not NEED_DATA and reframed.raw == passed.raw  # type: ignore[union-attr]
        assert again.next_event() is NEED_DATA
        kept = {name.upper() for name, _ in items} & {b"UID", b"FLAGS", b"MODSEQ"}
        assert passed.raw.startswith(b"* %d FETCH (" % number) and kept


@st.composite
def untagged(draw):  # type: ignore[no-untyped-def]
    """One untagged response, maybe ending in a literal: a FETCH with a trailer, another response
    with a literal after its head, or a status response whose literal marker counts the octets of
    a LIST behind it that carries the FETCH (imaplib reads the LIST's head as the literal)."""
    kind = draw(st.sampled_from(["fetch", "other", "smuggled"]))
    if kind == "fetch":
        return b"* 1 FETCH (UID 1 FLAGS ())" + draw(trailers) + b"\r\n"
    if kind == "other":
        return draw(heads) + draw(st.one_of(st.just(b""), literal_tails())) + b"\r\n"
    listed = b'* LIST () "/" ' + draw(announcements) % len(WRAPPED) + b"\r\n"
    return draw(heads) + b" {%d}\r\n" % len(listed) + listed + WRAPPED + b"\r\n"


def _through_gate(stream: bytes) -> bytes:
    """What the client gets of ``stream``: the gate's output up to where the session ends."""
    reader, gate, out = ResponseReader(), Gate(), []
    reader.receive_data(stream)
    try:
        while (response := reader.next_event()) is not NEED_DATA:
            out.append(gate.response(response).raw)  # type: ignore[arg-type]
    except RemoteProtocolError:
        out.append(b"* BYE protocol error\r\n")
    return b"".join(out)


def _imaplib_reads(data: bytes) -> dict[str, list[object]]:
    """The untagged responses imaplib's own reader (IMAP4._get_response) keeps for the
    application from ``data``, read to its end as from a socket."""
    client = imaplib.IMAP4.__new__(imaplib.IMAP4)
    client.debug = 0
    client._cmd_log, client._cmd_log_idx, client._cmd_log_len = {}, 0, 10  # its debug log
    client._mode_ascii()  # type: ignore[attr-defined]
    client.tagpre = b"A"
    client.tagre = re.compile(rb"(?P<tag>A\d+) (?P<type>[A-Z]+) (?P<data>.*)", re.ASCII)
    client.tagged_commands = {b"A1": None}
    client.untagged_responses = {}
    client.continuation_response = ""
    client._idle_capture = False  # read by the reader of Python 3.14 and later
    client.file = io.BytesIO(data)  # type: ignore[assignment]
    while client.file.tell() < len(data):
        client._get_response()  # type: ignore[attr-defined]  # abort: imaplib framed it otherwise
    return client.untagged_responses  # type: ignore[return-value]


def test_imaplib_reads_the_smuggled_fetch_when_framing_is_not_checked() -> None:
    # the check below would see the attack: imaplib, fed the server's bytes unchanged, hands out MARK
    listed = b'* LIST () "/" {%d}\r\n' % len(WRAPPED)
    stream = b"* OK hi {%d}\r\n" % len(listed) + listed + WRAPPED + b"\r\nA1 OK done\r\n"
    assert MARK in repr(_imaplib_reads(stream).get("FETCH")).encode()


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.lists(untagged(), min_size=1, max_size=4))
def test_imaplib_frames_what_the_gate_passes_as_the_proxy_did(responses: list[bytes]) -> None:
    passed = _through_gate(b"".join(responses) + b"A1 OK done\r\n")
    kept = _imaplib_reads(passed)
    assert MARK not in repr(kept.get("FETCH", [])).encode()
    assert b"RFC822" not in repr(kept.get("FETCH", [])).encode()
