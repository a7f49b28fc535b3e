"""A message too large to scan, with ``response.on-scan-error = pass``: delivered, tagged unscanned.

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
or BINARY of such a message still gets the notice (imap_fetch.oversize_notice), as it does under
``block``.

A server that sends less than the RFC822.SIZE it gave leaves the answer's literal short: the
session ends (never a shorter message that looks whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.fetch import FetchRequest
from mailguard.protocols.imap.fetch_response import parse_fetch_response
from mailguard.protocols.imap.responses import Response
from mailguard.protocols.pop3_sizes import UNSCANNED_TAG  # the same header on both doors
from mailguard.proxy.imap_render import Record, render_around_content

if TYPE_CHECKING:
    from mailguard.proxy.imap_fetch import FetchInterception

__all__ = ["UNSCANNED_TAG", "WINDOW", "streamable", "stream_unscanned"]


#: octets asked of the server at a time
WINDOW = 4 * 1024 * 1024

_WHOLE_MESSAGE = {"RFC822", "RFC822.PEEK"}


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


async def stream_unscanned(fetch: "FetchInterception", record: Record, largest: int) -> None:
    """Send the client its answer for ``record``, the message streamed through with our header;
    ``largest``: the longest literal the session takes from the server."""
    session = fetch.session
    total = record.size + len(UNSCANNED_TAG)
    start, end = _asked_range(fetch.request, total)
    head, tail, streamed = render_around_content(record, fetch.request, total, end - start)
    session.send_client(head)
    if streamed:
        await _send_range(fetch, record, start, end, max(1, min(WINDOW, largest)))
    session.send_client(tail)
    host = session.context.host
    if host is not None:
        host.count("unscanned")
    session.log.warning(
        "message UID %d (%d bytes) over max-object-size: delivered unscanned", record.uid, record.size)


def _asked_range(request: FetchRequest, total: int) -> tuple[int, int]:
    """Which octets of the tagged message (``total`` long) the client's text item asks for."""
    att = next((a for a in request.atts if a.carries_content), None)
    if att is None or att.origin is None:
        return 0, total
    start = min(att.origin, total)
    return start, total if att.length is None else min(total, start + att.length)


async def _send_range(fetch: "FetchInterception", record: Record, start: int, end: int, step: int) -> None:
    """Octets ``start`` to ``end`` of our header followed by the message, window by window."""
    session = fetch.session
    tag_end = len(UNSCANNED_TAG)
    if start < tag_end:
        session.send_client(UNSCANNED_TAG[start:min(end, tag_end)])
    offset, stop = max(start, tag_end) - tag_end, end - tag_end
    while offset < stop:
        window = await _window(fetch, record.uid, offset, min(step, stop - offset))
        if not window:
            raise RemoteProtocolError(f"the server sent less of message UID {record.uid} than its "
                                      f"RFC822.SIZE ({record.size}); closing")
        window = window[: stop - offset]
        session.send_client(window)
        await session.drain_client()
        offset += len(window)


async def _window(fetch: "FetchInterception", uid: int, offset: int, length: int) -> bytes:
    """``length`` octets of message ``uid`` from ``offset``, as the server sends them."""
    session = fetch.session
    tag = session.new_tag()
    key = b"BODY[]<%d>" % offset
    found: list[bytes] = []

    def on_window(response: Response) -> None:
        if response.word == "FETCH":
            data = parse_fetch_response(response)
            item = next((i for i in data.items if i.key.upper() == key), None)
            if data.uid == uid and item is not None:
                found.append(item.value)
                return
        fetch.pass_on(response)

    session.send_upstream(tag + b" UID FETCH %d (BODY.PEEK[]<%d.%d>)\r\n" % (uid, offset, length))
    done = await fetch.collect(tag, on_window)
    if done.word != "OK" or not found:
        return b""
    return found[0]
