import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.limits import ImapLimits
from mailguard.protocols.events import NEED_DATA
from mailguard.protocols.imap.responses import ResponseKind, Response, ResponseReader


def read_all(data: bytes, chunk: int = 0, limits: ImapLimits = ImapLimits()) -> list[Response]:
    """Every response in ``data``, fed whole or ``chunk`` bytes at a time (the framing must not care)."""
    reader = ResponseReader(limits)
    out = []
    pieces = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.receive_data(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            out.append(event)
    assert reader.buffered == 0
    return out


MULTI_LITERAL = (
    b"* 5 FETCH (UID 9 RFC822.SIZE 1234 BODY[HEADER] {14}\r\nSubject: x\r\n\r\n"
    b" BODY[TEXT] {5}\r\nhello FLAGS (\\Seen))\r\n"
    b"* 3 FETCH (FLAGS (\\Seen))\r\n"
    b"* 4 EXISTS\r\n"
    b"* 2 EXPUNGE\r\n"
    b"a1 OK FETCH completed\r\n"
)


@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_multi_literal_fetch_and_unsolicited_responses_are_framed_alike(chunk: int) -> None:
    events = read_all(MULTI_LITERAL, chunk)
    assert [(e.kind, e.word, e.number, e.tag) for e in events] == [
        (ResponseKind.UNTAGGED, "FETCH", 5, None),
        (ResponseKind.UNTAGGED, "FETCH", 3, None),
        (ResponseKind.UNTAGGED, "EXISTS", 4, None),
        (ResponseKind.UNTAGGED, "EXPUNGE", 2, None),
        (ResponseKind.TAGGED, "OK", None, b"a1"),
    ]
    assert b"".join(e.raw for e in events) == MULTI_LITERAL


def test_a_literal_holding_crlf_and_a_fake_tagged_line_is_not_split() -> None:
    fake = b"x\r\na1 OK fake\r\n"
    data = b"* 1 FETCH (BODY[] {%d}\r\n" % len(fake) + fake + b")\r\na1 OK real\r\n"
    events = read_all(data, 3)
    assert len(events) == 2
    assert events[1].raw == b"a1 OK real\r\n"


MESSAGE = b"Subject: x\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n"


def refused(data: bytes, limits: ImapLimits = ImapLimits()) -> str:
    """The error of a stream the reader must refuse, fed whole and byte by byte."""
    messages = []
    for chunk in (0, 1):
        with pytest.raises(RemoteProtocolError) as error:
            read_all(data, chunk, limits)
        messages.append(str(error.value))
    return messages[0]


def test_a_literal_announced_in_a_status_response_ends_the_session() -> None:
    # imaplib reads "* OK {K}" as a literal of K octets and the FETCH inside it as data of the
    # OK, then hands the BODY[] that follows to its caller; a reader of the grammar reads one
    # line of text. The two cannot both be served: the stream is refused.
    hidden = b"* 1 FETCH (BODY[] {%d}\r\n" % len(MESSAGE)
    data = b"* OK {%d}\r\n" % len(hidden) + hidden + MESSAGE + b")\r\n* OK done\r\n"
    assert "grammar allows none" in refused(data)


@pytest.mark.parametrize("line", [
    b"* OK [ALERT] see {5}\r\n", b"* NO {5}\r\n", b"* BAD {5}\r\n", b"* BYE {5}\r\n",
    b"* PREAUTH {5}\r\n", b"* ok {5}\r\n", b"a1 OK {5}\r\n", b"a1 NO [ALERT] {5}\r\n", b"+ {5}\r\n",
    b"+ send ~{5}\r\n", b"* CAPABILITY IMAP4rev1 {5}\r\n", b"* 3 EXISTS {5}\r\n", b"* 2 EXPUNGE {5}\r\n",
    b"* SEARCH 1 2 {5}\r\n", b"* FLAGS (\\Seen {5}\r\n",
])
def test_text_only_responses_never_announce_literals(line: bytes) -> None:
    assert "grammar allows none" in refused(line + b"hello\r\na OK done\r\n")


@pytest.mark.parametrize("line", [
    b"* 1 FETCH (BODY[] x{5}\r\n",  # not after SP or "(": no string starts there
    b"* 1 FETCH (BODY[]{5}\r\n",
    b"* 1 FETCH (X-EVIL \"open {5}\r\n",  # inside a quoted string
    b"* 1 FETCH (X-EVIL \"esc\\\" {5}\r\n",
    b"* 1 FETCH (BODY[HEADER.FIELDS ({5}\r\n",  # inside a section
    b"* 1 FETCH (BODY[] ~~{5}\r\n",
])
def test_a_literal_where_no_string_starts_ends_the_session(line: bytes) -> None:
    assert "no string can start" in refused(line + b"hello)\r\n")


def test_a_literal_right_after_a_literal_ends_the_session() -> None:
    assert "no string can start" in refused(b"* 1 FETCH (X {3}\r\nabc{5}\r\nhello)\r\n")


def test_a_non_synchronising_literal_from_the_server_ends_the_session() -> None:
    # imaplib reads "{5+}" as text, an RFC 7888 reader as a literal
    assert "non-synchronising" in refused(b"* 1 FETCH (BODY[] {5+}\r\nhello)\r\n")


@pytest.mark.parametrize("name", [b"Ok-x", b"FETCH1", b"X.Y", b"x-evil"])
def test_a_literal_after_a_name_imaplib_reads_otherwise_ends_the_session(name: bytes) -> None:
    # imaplib's "[A-Z-]+" takes "O" of "Ok-x" and "FETCH" of "FETCH1", and then no literal
    refused(b"* " + name + b" {5}\r\nhello\r\n")


@pytest.mark.parametrize("stream, literals", [
    (b"* X-EVIL {5}\r\nhello\r\n", [b"hello"]),
    (b"* 4 X-EVIL (A ~{3}\r\nabc B {0}\r\n)\r\n", [b"abc", b""]),
    (b"* METADATA INBOX (/private/comment {5}\r\nhello)\r\n", [b"hello"]),
    (b"* LIST () \"/\" {4}\r\nx\r\ny\r\n", [b"x\r\ny"]),
    (b"* 1 FETCH (BODY[HEADER.FIELDS (\"A]\" B)] {2}\r\nhi X (\"q\\\"\" {1}\r\n!))\r\n", [b"hi", b"!"]),
    # every digit counts: imaplib reads five octets here
    (b"* 1 FETCH (BODY[] {0000000000000000000000005}\r\nhello)\r\n", [b"hello"]),
])
def test_literals_wherever_a_string_may_start(stream: bytes, literals: list[bytes]) -> None:
    for chunk in (0, 1):
        [response] = read_all(stream + b"a OK x\r\n", chunk)[:1]
        assert response.raw == stream
        assert [response.raw[a:b] for a, b in response.literals] == literals


@pytest.mark.parametrize("line", [
    b"* OK hi\n", b"* OK hi\rthere\r\n", b"* OK hi\0\r\n", b"a OK\r\r\n",
    b"* 1 FETCH (BODY[] {5}\nhello)\r\n", b"* 1 FETCH (BODY[] {5}\r\nhello)\n",
])
def test_bare_cr_bare_lf_and_nul_outside_literals_end_the_session(line: bytes) -> None:
    assert "bare CR" in refused(line + b"a OK x\r\n")


@pytest.mark.parametrize("line", [
    b"* " + b"9" * 5000 + b" EXISTS\r\n",  # int() refuses more than 4300 digits
    b"* 12345678901 FETCH (FLAGS ())\r\n",
    b"* FETCH (FLAGS ())\r\n", b"* 0 FETCH (FLAGS ())\r\n", b"* EXISTS\r\n", b"* 3 OK hi\r\n",
    b"*  OK hi\r\n", b"*OK hi\r\n", b"* 1 FETCH[x] (UID 1)\r\n", b"a1 5 OK hi\r\n", b"\r\n",
    b"a1 FETCH[x] (UID 1)\r\n", b"a1 OK(x) hi\r\n", b"a1 OKAY[x] hi\r\n",
])
def test_malformed_heads_end_the_session(line: bytes) -> None:
    refused(line)


def test_continuations_and_status_responses_are_one_line() -> None:
    events = read_all(b"+\r\n+ idling\r\n* OK [ALERT] a {b} c\r\n* ok hi\r\n* BYE\r\n"
                      b"* OK[CAPABILITY IMAP4rev1] hi\r\na OK done\r\n")
    assert [(e.kind, e.word) for e in events] == [
        (ResponseKind.CONTINUATION, ""), (ResponseKind.CONTINUATION, ""), (ResponseKind.UNTAGGED, "OK"), (ResponseKind.UNTAGGED, "OK"),
        (ResponseKind.UNTAGGED, "BYE"), (ResponseKind.UNTAGGED, "OK"), (ResponseKind.TAGGED, "OK")]


@pytest.mark.parametrize("word", [b"OK", b"NO", b"BAD", b"ok"])
def test_a_tagged_status_may_have_its_response_code_right_after_the_name(word: bytes) -> None:
    # Servers that write "* OK[...]" write "a1 OK[READ-WRITE] ..." too; the text is one line.
    events = read_all(b"a1 " + word + b"[READ-WRITE] SELECT completed\r\n* 2 EXISTS\r\n")
    assert [(e.kind, e.tag, e.word, e.literals) for e in events] == [
        (ResponseKind.TAGGED, b"a1", word.decode().upper(), ()), (ResponseKind.UNTAGGED, None, "EXISTS", ())]


def test_an_oversize_literal_is_refused_before_its_bytes_arrive() -> None:
    reader = ResponseReader(ImapLimits(max_response_literal=1000))
    reader.receive_data(b"* 1 FETCH (BODY[] {9223372036854775807}\r\nabc")
    with pytest.raises(RemoteProtocolError, match="cap"):
        reader.next_event()


def test_an_overlong_line_is_refused() -> None:
    reader = ResponseReader(ImapLimits(max_response_line=100))
    reader.receive_data(b"* OK " + b"x" * 200)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_eof_inside_a_literal_is_an_error() -> None:
    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (BODY[] {10}\r\nabc")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle"):
        reader.next_event()


def test_malformed_tagged_status_is_refused() -> None:
    reader = ResponseReader()
    reader.receive_data(b"a1 FETCH (UID 1)\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_discard_buffered_drops_a_partial_line() -> None:
    reader = ResponseReader()
    reader.receive_data(b"a OK go\r\n* CAPABILITY IMAP4rev1 AUTH=PLAI")
    assert reader.next_event().raw == b"a OK go\r\n"
    assert reader.buffered > 0
    assert reader.discard_buffered() == b"* CAPABILITY IMAP4rev1 AUTH=PLAI"
    assert reader.buffered == 0


def test_the_lexer_reads_sections_as_the_framing_does() -> None:
    from mailguard.protocols.imap.lexer import Lexer

    [response] = read_all(b'* 1 FETCH (BODY[HEADER.FIELDS ("A]" B)] {2}\r\nhi)\r\n')
    items = Lexer(response.raw, response.raw.index(b"(")).read_node().items
    assert [item.value for item in items] == [b'BODY[HEADER.FIELDS ("A]" B)]', b"hi"]


def _framed(data: bytes, chunk: int, cuts: list[int] | None = None,
            ) -> tuple[list[tuple[bytes, ResponseKind, tuple[tuple[int, int], ...]]], int | str]:
    """The responses in ``data`` fed whole, byte by byte, or in reads of the ``cuts`` sizes (the
    rest whole), and the bytes left (or "refused")."""
    reader, out = ResponseReader(ImapLimits(max_response_line=40, max_response_size=60)), []
    reads = [data] if not chunk else [data[i : i + 1] for i in range(len(data))]
    if cuts is not None:
        reads, at = [], 0
        for cut in cuts:
            reads.append(data[at : at + cut])
            at += cut
        reads = [read for read in reads + [data[at:]] if read]  # b"" would be the end of the stream
    try:
        for piece in reads:
            reader.receive_data(piece)
            while (event := reader.next_event()) is not NEED_DATA:
                out.append((event.raw, event.kind, event.literals))
    except RemoteProtocolError:
        return out, "refused"
    return out, reader.buffered


_RESPONSE_PIECES = [b"* 1 FETCH (", b"BODY[] ", b"{3}\r\n", b"abc", b"{0}\r\n", b")\r\n", b"\r\n", b"a1 OK done\r\n",
                    b"* 2 EXISTS\r\n", b'"q\\"x" ', b"~{2}\r\n", b"\n", b"\r", b"x" * 30, b"* OK {2}\r\n"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_RESPONSE_PIECES), max_size=12), st.lists(st.integers(1, 9), max_size=10))
def test_responses_are_framed_alike_in_any_reads(pieces: list[bytes], cuts: list[int]) -> None:
    """Wholly buffered, byte by byte, or in reads that land inside literals and are kept as
    pieces (KEEP_READS_FROM 1 here): the same responses, literals and refusals."""
    import mailguard.protocols.imap.responses as module

    data = b"".join(pieces)
    whole = _framed(data, 0)
    assert _framed(data, 1) == whole
    kept_from = module.KEEP_READS_FROM
    module.KEEP_READS_FROM = 1
    try:
        assert _framed(data, 0, cuts) == whole
    finally:
        module.KEEP_READS_FROM = kept_from


def test_the_lexer_refuses_lists_nested_deeper_than_it_reads() -> None:
    from mailguard.protocols.imap.lexer import MAX_DEPTH, Lexer

    assert Lexer(b"(" * MAX_DEPTH + b")" * MAX_DEPTH).read_node().end == 2 * MAX_DEPTH
    with pytest.raises(RemoteProtocolError):
        Lexer(b"(" * (MAX_DEPTH + 1) + b")" * (MAX_DEPTH + 1)).read_node()


@pytest.mark.parametrize(("data", "values"), [
    (b'("a\\"b" "c\\\\" x{1}\r\ny)', [b'a"b', b"c\\", b"x", b"y"]),
    (b"(A[B (C)]<1> ~{2}\r\nzz NIL)", [b"A[B (C)]<1>", b"zz", b"NIL"]),
])
def test_the_lexer_reads_strings_sections_and_literals_in_lists(data: bytes, values: list[bytes]) -> None:
    from mailguard.protocols.imap.lexer import Lexer

    assert [item.value for item in Lexer(data).read_node().items] == values


@pytest.mark.parametrize("data", [b'("a\r\n")', b"(a[b", b"(a", b'("a', b"(a {x}\r\n)", b"(\x00 [)"])
def test_the_lexer_refuses_what_it_cannot_read_in_a_list(data: bytes) -> None:
    from mailguard.protocols.imap.lexer import Lexer

    with pytest.raises(RemoteProtocolError):
        Lexer(data).read_node()
