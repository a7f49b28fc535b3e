"""Properties of the gate's FETCH filter over generated server responses: whatever a server puts in
FETCH data nobody asked for, the client gets at most UID, FLAGS and MODSEQ, never a literal."""

from __future__ import annotations

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


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 99), st.lists(st.tuples(names, values), min_size=1, max_size=6))
def test_unsolicited_fetch_data_never_passes_a_literal_or_text(number: int, items) -> None:  # type: ignore[no-untyped-def]
    raw = b"* %d FETCH (" % number + b" ".join(name + b" " + value for name, value in items) + b")\r\n"
    reader = ResponseReader()
    reader.receive_data(raw)
    response = reader.next_event()
    assert response is not NEED_DATA
    try:
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
