"""tar members (POSIX ustar, GNU and pax; old v7 headers recognised by their checksum).

A compressed tar (``.tgz``) is a gzip stream whose child is a tar: ``streams`` unpacks
the first level and this module the second, each drawing on the same budget. tar stores
members uncompressed, but a GNU sparse member can claim a size far beyond its data
(holes read as zeros), so members are still read through the member cap.
"""

from __future__ import annotations

import io
import tarfile

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

_BLOCK = 512
_CHECKSUM = slice(148, 156)


def recognise(data: bytes) -> bool:
    if len(data) < _BLOCK:
        return False
    if data[257:262] == b"ustar":
        return True
    return _v7_header(data)


def _v7_header(data: bytes) -> bool:
    """A pre-POSIX header has no magic; its checksum (sum of the header bytes, the checksum
    field counted as spaces) is what identifies it. Reads the first block of ``data`` only,
    and the checksum field before summing: most files give up there, with no copy made."""
    if data[0] == 0:
        return False
    field = data[_CHECKSUM].rstrip(b"\x00 ")
    if not field or field.lstrip(b" ").translate(None, b"01234567"):
        return False
    expected = int(field.lstrip(b" "), 8)
    return expected == sum(data[:148]) + 8 * 0x20 + sum(data[156:_BLOCK])


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise ScanIncomplete(Reason.CORRUPT, f"not a readable tar: {exc}") from None
    cap = bounded.member_cap(budget)
    while True:
        try:
            info = archive.next()
        except (tarfile.TarError, EOFError, ValueError, OverflowError) as exc:
            members.skip("", Reason.CORRUPT, f"damaged tar header: {exc}")
            break
        if info is None:
            break
        members.count()
        # tarfile keeps every header it has read; we only need the current one.
        archive.members.clear()
        if not info.isreg():
            continue  # directories, links, devices: no content of their own
        members.unpack(info.name, lambda info=info: _read_member(archive, info, cap, budget))


def _read_member(archive: tarfile.TarFile, info: tarfile.TarInfo, cap: int, budget: Budget) -> bytes:
    if info.size > cap:
        raise ScanIncomplete(Reason.LIMIT, f"member is larger than {cap} bytes")
    handle = archive.extractfile(info)
    if handle is None:
        return b""
    try:
        content = handle.read(cap + 1)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise ScanIncomplete(Reason.CORRUPT, f"damaged tar member: {exc}") from None
    if len(content) < info.size:
        raise ScanIncomplete(Reason.CORRUPT, "tar member is truncated")
    budget.charge(len(content))
    return content
