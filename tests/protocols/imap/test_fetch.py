import pytest

from mailguard.protocols.imap.commands import CommandReader
from mailguard.protocols.imap.fetch import FetchAtt, SequenceSet, format_uid_set, parse_att, parse_fetch


def command(raw: bytes):
    reader = CommandReader()
    reader.receive_data(raw)
    return reader.next_event()


def test_items_keep_the_section_as_written_and_echo_without_peek_and_length() -> None:
    request = parse_fetch(
        command(b"a UID FETCH 7 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (date subject From x-priority)]<0.100>)\r\n")
    )
    assert request.uid and request.sequence_set == b"7"
    att = request.atts[2]
    assert att.name == "BODY.PEEK" and att.section == b"HEADER.FIELDS (date subject From x-priority)"
    assert (att.origin, att.length) == (0, 100)
    assert att.response_name() == b"BODY[HEADER.FIELDS (date subject From x-priority)]<0>"
    assert not request.sets_seen and request.needs_message


@pytest.mark.parametrize(
    "raw, seen, content",
    [
        (b"BODY[]", True, True),
        (b"body.peek[]", False, True),
        (b"RFC822", True, True),
        (b"RFC822.PEEK", False, True),
        (b"RFC822.TEXT", True, True),
        (b"RFC822.HEADER", False, True),
        (b"BODY[2.MIME]", True, True),
        (b"BINARY[1]", True, True),
        (b"BINARY.PEEK[1]<0.10>", False, True),
        (b"BINARY.SIZE[1]", False, False),
        (b"BODY", False, False),
        (b"BODYSTRUCTURE", False, False),
        (b"FLAGS", False, False),
    ],
)
def test_item_classes(raw: bytes, seen: bool, content: bool) -> None:
    att = parse_att(raw)
    assert att.sets_seen is seen
    assert att.carries_content is content


def test_macro_and_single_item_and_modifiers() -> None:
    request = parse_fetch(command(b"a FETCH 1:* FULL\r\n"))
    assert [a.name for a in request.atts] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    request = parse_fetch(command(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)\r\n"))
    assert request.modifiers == b"(CHANGEDSINCE 5)" and not request.needs_message
    request = parse_fetch(command(b"a fetch 3 rfc822.peek\r\n"))
    assert request.atts == (FetchAtt(raw=b"rfc822.peek", name="RFC822.PEEK"),)
    assert request.atts[0].response_name() == b"RFC822"


def test_sequence_sets() -> None:
    seq = SequenceSet(b"1:3,7,10:*")
    assert [n for n in range(1, 12) if n in seq] == [1, 2, 3, 7, 10, 11]
    assert 5 in SequenceSet(b"9:4")
    assert format_uid_set([7, 1, 2, 3, 9, 10]) == b"1:3,7,9:10"
