"""A realistic mailbox for the benches: mostly small messages, a long tail of big attachments.

    .venv/bin/python bench/realmail.py [--megabytes 1024 | --messages 10000] [--seed 1] [--mbox PATH]

Sizes follow the mix measured on real mailboxes: median ~13 KB, mean ~101 KB, 99th
percentile ~0.96 MB, a few messages of several MB. They are drawn from a piecewise log-linear
quantile function, stratified (message i gets a size from the i-th slice of the distribution,
then the order is shuffled), so even a small run has the mix's shape and its tail. About 2 % of
the messages are infected with EICAR, placed in turn in each of the ways mail carries a file:
a base64 attachment, a 7bit attachment, inside a zip, inside a forwarded message
(message/rfc822), and a quoted-printable attachment behind a big base64 one.

Everything is deterministic for a seed: the same call gives the same bytes. Messages use CRLF
line ends, as a server sends them; ``write_mbox`` stores them as an mbox is stored (LF, a
``From `` line each) for ``mailguard scan``. The message makers of bench/scan.py are reused.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan import EICAR, _attachment, _b64, _head, _html, _multipart, _prose, _zip  # noqa: E402

__all__ = ["INFECTED_EVERY", "Mail", "generate", "message_sizes", "write_mbox"]

#: (cumulative probability, size in KB): the size mix's quantile function, log-linear between knots
QUANTILES = ((0.0, 1.5), (0.25, 5.5), (0.5, 13.0), (0.75, 32.0), (0.9, 120.0), (0.95, 330.0),
             (0.99, 960.0), (0.997, 5500.0), (1.0, 20000.0))
#: one message in this many is infected (2 %)
INFECTED_EVERY = 50
MEAN_KB = 101  # what QUANTILES averages to (about), to turn megabytes into a message count
PLACEMENTS = ("base64 attachment", "7bit attachment", "zip", "forwarded message", "behind a big attachment")
FROM_LINE = b"From bench@example.org Mon Jan  1 00:00:00 2024\n"


@dataclass(frozen=True)
class Mail:
    raw: bytes
    infected: bool


def _quantile(u: float) -> float:
    for (p0, v0), (p1, v1) in zip(QUANTILES, QUANTILES[1:]):
        if u <= p1:
            t = (u - p0) / (p1 - p0)
            return math.exp(math.log(v0) + t * (math.log(v1) - math.log(v0)))
    return QUANTILES[-1][1]


def message_sizes(count: int, seed: int = 1) -> list[int]:
    """``count`` message sizes in bytes, stratified over the mix and shuffled."""
    rng = random.Random(seed)
    sizes = [int(_quantile((i + rng.random()) / count) * 1024) for i in range(count)]
    rng.shuffle(sizes)
    return sizes


def _text_part(rng: random.Random, size: int) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + _prose(rng, max(200, size))


def _infection(rng: random.Random, index: int, placement: str) -> bytes:
    if placement == "base64 attachment":
        return _attachment(EICAR, "invoice.com", "application/octet-stream")
    if placement == "7bit attachment":
        return (b'Content-Type: application/octet-stream; name="readme.com"\r\n'
                b'Content-Disposition: attachment; filename="readme.com"\r\n'
                b"Content-Transfer-Encoding: 7bit\r\n\r\n" + EICAR + b"\r\n")
    if placement == "zip":
        return _attachment(_zip(rng, {"invoice.com": EICAR}), "invoice.zip", "application/zip")
    if placement == "forwarded message":
        inner = _multipart(_head(1_000_000 + index), index + 1_000_000,
                           [_text_part(rng, 300), _attachment(EICAR, "eicar.com", "application/octet-stream")])
        return b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n" + inner
    # quoted-printable: EICAR's '=' becomes =3D, so a detector must decode to see it
    encoded = EICAR.replace(b"=", b"=3D")
    return (b'Content-Type: application/octet-stream; name="tool.com"\r\n'
            b'Content-Disposition: attachment; filename="tool.com"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded + b"\r\n")


def _message(rng: random.Random, index: int, size: int, infected: bool) -> bytes:
    """One message of about ``size`` bytes; text only when small, else text plus an attachment."""
    head = _head(index)
    parts: list[bytes] = []
    if infected:
        parts.append(_infection(rng, index, PLACEMENTS[(index // INFECTED_EVERY) % len(PLACEMENTS)]))
    if size < 20_000 and not infected:
        text = _prose(rng, max(200, size - len(head) - 200))
        if index % 2:
            return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
        half = _prose(rng, max(200, (size - len(head)) * 2 // 5))
        plain = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + half
        return _multipart(head, index, [plain, _html(half)], "alternative")
    text = _text_part(rng, min(4_000, size // 4))
    room = max(0, size - len(head) - len(text) - sum(map(len, parts)) - 400)
    if room > 1_000:
        # base64 grows data by 4/3 (plus line ends): the attachment's bytes for ``room`` on the wire
        data_size = room * 3 // 4 - room // 78
        kind = rng.random()
        if kind < 0.15 and data_size < 4_000_000:
            members = {"notes.txt": _prose(rng, data_size // 3), "data.bin": rng.randbytes(data_size * 2 // 3)}
            parts.insert(0, _attachment(_zip(rng, members), "files.zip", "application/zip"))
        else:
            ctype, ext = rng.choice([("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("image/png", "png"),
                                     ("application/octet-stream", "bin")])
            parts.insert(0, _attachment(rng.randbytes(data_size), f"file{index}.{ext}", ctype))
    return _multipart(head, index, [text, *parts])


def generate(count: int, seed: int = 1, kb: tuple[float, float] | None = None) -> Iterator[Mail]:
    """The mailbox's messages in order, one at a time (a 1 GB mailbox is never all in memory);
    with ``kb``, only those whose drawn size is in [low, high) KB (one size class, the same
    messages as in the whole mailbox)."""
    sizes = message_sizes(count, seed)
    for index, size in enumerate(sizes):
        if kb is not None and not kb[0] * 1024 <= size < kb[1] * 1024:
            continue
        rng = random.Random(f"{seed}/{index}")
        infected = index % INFECTED_EVERY == INFECTED_EVERY // 2
        yield Mail(_message(rng, index, size, infected), infected)


def count_for(megabytes: float) -> int:
    return max(1, round(megabytes * 1024 / MEAN_KB))


def mbox_entry(raw: bytes) -> bytes:
    """``raw`` (CRLF) as one mbox entry: LF line ends, mboxrd quoting, a ``From `` line."""
    text = re.sub(rb"(?m)^(>*From )", rb">\1", raw.replace(b"\r\n", b"\n"))
    return FROM_LINE + text + (b"\n" if text.endswith(b"\n") else b"\n\n")


def write_mbox(path: Path, mails: list[bytes]) -> None:
    with open(path, "wb") as stream:
        for raw in mails:
            stream.write(mbox_entry(raw))


def mailbox_arguments(parser: argparse.ArgumentParser) -> None:
    """``--megabytes`` or ``--messages``, and ``--seed``: which mailbox ``generate`` makes
    (``args.messages or count_for(args.megabytes)`` messages)."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--megabytes", type=float, default=1024)
    size.add_argument("--messages", type=int)
    parser.add_argument("--seed", type=int, default=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mailbox_arguments(parser)
    parser.add_argument("--mbox", type=Path, help="also write the mailbox here as an mbox")
    args = parser.parse_args()
    count = args.messages or count_for(args.megabytes)
    sizes, infected = [], 0
    stream = open(args.mbox, "wb") if args.mbox else None  # noqa: SIM115 - closed below
    try:
        for mail in generate(count, args.seed):
            sizes.append(len(mail.raw))
            infected += mail.infected
            if stream:
                stream.write(mbox_entry(mail.raw))
    finally:
        if stream:
            stream.close()
    sizes.sort()
    print(f"{count} messages, {sum(sizes) / 1e6:.1f} MB, median {statistics.median(sizes) / 1024:.1f} KB, "
          f"mean {statistics.mean(sizes) / 1024:.1f} KB, p99 {sizes[int(0.99 * (count - 1))] / 1024:.0f} KB, "
          f"max {sizes[-1] / 1024:.0f} KB, {infected} infected")


if __name__ == "__main__":
    main()
