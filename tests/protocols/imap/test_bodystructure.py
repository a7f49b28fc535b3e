from mailguard.protocols.imap.bodystructure import body_structure, count_lines, envelope
from mailguard.protocols.imap.lexer import Lexer, NodeKind
from mailguard.protocols.imap.sections import cut_section, parse_section
from mailguard.protocols.imap.structure import parse_message
from tests.protocols.imap.messages import NESTED, SIMPLE


def test_simple_message() -> None:
    body = SIMPLE.partition(b"\r\n\r\n")[2]
    assert body_structure(SIMPLE, extensible=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 4)' % len(body)
    )
    assert body_structure(SIMPLE) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 4 NIL NIL NIL NIL)' % len(body)
    )


def test_sizes_in_the_structure_match_the_sections() -> None:
    tree = Lexer(body_structure(NESTED)).read_node()
    assert tree.kind is NodeKind.LIST
    first, attached, binary = tree.items[:3]
    root = parse_message(NESTED)
    for node, part in ((first, b"1"), (attached, b"2"), (binary, b"3")):
        assert int(node.items[6].value) == len(cut_section(NESTED, root, parse_section(part)))
    assert tree.items[3].value == b"mixed"
    # message/rfc822: envelope, body structure and lines follow the size
    assert attached.items[7].items[1].value == b"inner"
    assert attached.items[8].items[-5].value == b"alternative"
    assert binary.items[8].items[0].value == b"attachment"


def test_envelope_defaults_sender_and_reply_to_to_from() -> None:
    env = envelope(SIMPLE, parse_message(SIMPLE))
    assert env == (
        b'("Mon, 1 Jan 2024 10:00:00 +0000" "hello" (("Alice" NIL "alice" "example.com")) '
        b'(("Alice" NIL "alice" "example.com")) (("Alice" NIL "alice" "example.com")) '
        b'((NIL NIL "bob" "example.com")) NIL NIL NIL "<1@example.com>")'
    )


def test_count_lines() -> None:
    assert count_lines(b"") == 0
    assert count_lines(b"a\r\nb") == 1
    assert count_lines(b"a\r\n") == 1
