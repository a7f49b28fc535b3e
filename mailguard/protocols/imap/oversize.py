"""A message too large to scan: streamed through tagged unscanned (``response.on-scan-error =
pass``), or a notice in its place.

docs/settings.md#response: a message that could not be fully scanned is delivered tagged
``unscanned`` under ``pass``. A message over max-object-size cannot even be held, so it is streamed:
the client's answer announces the message's size plus our header, then gets the header
(``X-MailGuard-Result: unscanned; reason="limit"``) and the message itself, fetched from the server
in windows of ``WINDOW`` octets (``BODY.PEEK[]<offset.length>``, each an ordinary small literal),
each sent on before the next is asked for. Memory stays at one window whatever the message size, and
no framing of ours ever holds a literal over its cap.

The forms that ask for the whole message are streamed: BODY[], BODY.PEEK[], RFC822,
RFC822.PEEK, and the partials of BODY[] that Thunderbird and iOS fetch large messages with
(``BODY.PEEK[]<o.l>``: octets of the tagged message, so our header is in the first ones), with or
without items that do not depend on the text, and RFC822.SIZE, which counts our header. A section
or BINARY of such a message still gets the notice (``oversize_notice``), as it does under
``block``.

A server that sends less than the RFC822.SIZE it gave leaves the answer's literal short: the
session ends (never a shorter message that looks whole).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.fetch import FetchRequest
from mailguard.protocols.imap.fetch_response import parse_fetch_response
from mailguard.protocols.imap.flows import Step
from mailguard.protocols.imap.render import Record, render_around_content
from mailguard.protocols.imap.responses import Response
from mailguard.protocols.pop3_sizes import UNSCANNED_TAG  # the same header on both doors

if TYPE_CHECKING:
    from mailguard.protocols.imap.core import SessionCore

#: what the FETCH being answered lends: collect(tag, on_untagged) reads responses until ``tag``
#: completes, handing the untagged ones to on_untagged; pass_on(response) queues a response
#: for the client in its place in the answer (interception.FetchInterception)
Collect = Callable[[bytes, Callable[[Response], None]], Step]
PassOn = Callable[[Response], None]

__all__ = ["UNSCANNED_TAG", "WINDOW", "oversize_notice", "stream_unscanned", "streamable"]


#: octets asked of the server at a time
WINDOW = 4 * 1024 * 1024

_WHOLE_MESSAGE = {"RFC822", "RFC822.PEEK"}


def oversize_notice(uid: int, size: int, largest: int) -> bytes:
    """What a client gets for a message larger than we can scan; the same bytes every time."""
    return (
        b"From: mailguard <mailguard@localhost>\r\n"
        b"Subject: [mailguard] message %d not delivered: too large to scan\r\n"
        b"X-MailGuard-Result: unscanned; reason=\"limit\"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"This message (%d bytes) is larger than mailguard can scan (%d bytes,\r\n"
        b"web-and-email.email-client.threatsense.limits.max-object-size). It is still on\r\n"
        b"the server, unchanged.\r\n" % (uid, size, largest)
    )


def streamable(request: FetchRequest) -> bool:
    """Whether every item asked for can be answered while the message streams through."""
    content = 0
    for att in request.atts:
        if att.carries_content:
            if not (att.name in _WHOLE_MESSAGE or (att.name in ("BODY", "BODY.PEEK") and att.section == b"")):
                return False
            content += 1
        elif att.name == "BINARY.SIZE":
            return False  # the decoded size needs the whole message
    return content <= 1


def stream_unscanned(machine: "SessionCore", request: FetchRequest, record: Record, largest: int,
                     collect: Collect, pass_on: PassOn) -> Step:
    """Send the client its answer for ``record``, the message streamed through with our header;
    ``largest``: the longest literal the session takes from the server."""
    total = record.size + len(UNSCANNED_TAG)
    start, end = _asked_range(request, total)
    head, tail, streamed = render_around_content(record, request, total, end - start)
    machine.to_client(head)
    if streamed:
        window = _window_reader(machine, record.uid, collect, pass_on)
        yield from _send_range(machine, window, record, start, end, max(1, min(WINDOW, largest)))
    machine.to_client(tail)
    machine.notice("warning", f"message UID {record.uid} ({record.size} bytes) over max-object-size: "
                   "delivered unscanned", "unscanned")


def _asked_range(request: FetchRequest, total: int) -> tuple[int, int]:
    """Which octets of the tagged message (``total`` long) the client's text item asks for."""
    att = next((a for a in request.atts if a.carries_content), None)
    if att is None or att.origin is None:
        return 0, total
    start = min(att.origin, total)
    return start, total if att.length is None else min(total, start + att.length)


def _send_range(machine: "SessionCore", window_of: Callable[[int, int], Step], record: Record, start: int,
                end: int, step: int) -> Step:
    """Octets ``start`` to ``end`` of our header followed by the message, window by window."""
    tag_end = len(UNSCANNED_TAG)
    if start < tag_end:
        machine.to_client(UNSCANNED_TAG[start:min(end, tag_end)])
    offset, stop = max(start, tag_end) - tag_end, end - tag_end
    while offset < stop:
        window = yield from window_of(offset, min(step, stop - offset))
        if not window:
            raise RemoteProtocolError(f"the server sent less of message UID {record.uid} than its "
                                      f"RFC822.SIZE ({record.size}); closing")
        window = window[: stop - offset]
        machine.to_client(window)
        offset += len(window)


def _window_reader(machine: "SessionCore", uid: int, collect: Collect,
                   pass_on: PassOn) -> Callable[[int, int], Step]:
    def window(offset: int, length: int) -> Step:
        """``length`` octets of message ``uid`` from ``offset``, as the server sends them."""
        tag = machine.new_tag()
        key = b"BODY[]<%d>" % offset
        found: list[bytes] = []

        def on_window(response: Response) -> None:
            if response.word == "FETCH":
                data = parse_fetch_response(response)
                item = next((i for i in data.items if i.key.upper() == key), None)
                if data.uid == uid and item is not None:
                    found.append(item.value)
                    return
            pass_on(response)

        machine.to_server(tag + b" UID FETCH %d (BODY.PEEK[]<%d.%d>)\r\n" % (uid, offset, length))
        done = yield from collect(tag, on_window)
        if done.word != "OK" or not found:
            return b""
        return found[0]
    return window
