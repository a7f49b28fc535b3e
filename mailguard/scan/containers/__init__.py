"""Containers: what is inside archives, documents and programs, under the message budget.

``expand(obj, budget, policy)`` is the one entry point. It recognises a container by its
magic bytes, never by its name alone (a zip renamed ``invoice.pdf`` is still a zip; a name
only widens what LZMA-alone, which has no magic, may look like, and makes a file named as a
compressed stream that nothing here opens unscanned), and returns
the direct children: ``obj.path + "/" + member_name``, ``names=(member_name,)``, one
level deeper. The engine calls it again on each child, so nesting (zip in tar in gzip) is
a walk the engine owns, while every byte unpacked anywhere draws on one ``Budget``.

Archives: zip (zip64, and what only local headers list), 7z, tar, cpio, cab, ISO 9660,
SZDD, gzip/bzip2/xz/lzip/LZMA-alone streams, and archives inside programs
(self-extractors). Documents: TNEF (winmail.dat), OLE2 (Office 97-2003, .msg, VBA source,
embedded objects), RTF objects, PDF streams. Known formats we cannot open (RAR, ARJ, zstd,
...) are UNSUPPORTED.

Failure is never silent (docs/pitfalls.md#limits-bombs-and-missing-decoders,
docs/pitfalls.md#encrypted-archives):
- a container nested too deep, or a bomb, raises ``ScanIncomplete(LIMIT)``;
- an encrypted, corrupt or unsupported member raises ``ExpansionIncomplete`` once the
  other members are unpacked; its ``children`` are those, its ``part`` the member path,
  so the engine can still find what the readable members hold.
Archives are looked into only when ``policy.archives``; documents (TNEF, OLE2, RTF, PDF)
always, because they are how mail programs and Office carry files, not archives the
user chose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mailguard.scan.containers import (
    bounded, cab, cfb, cpio, embedded, iso9660, ole2, pdf, pkzip, rtf, sevenzip, streams, szdd, tar, tnef, unsupported,
)
from mailguard.scan.containers.bounded import ExpansionIncomplete
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Reason

__all__ = ["ExpansionIncomplete", "capabilities", "expand", "kind_of"]


class _Kind(NamedTuple):
    name: str
    recognise: Callable[[bytes], bool]
    unpack: Callable[[bounded.Members, bytes, Budget], None]
    is_archive: bool  # gated by threatsense.objects.archives
    # Every first byte a file this kind recognises can have; None when its mark is not at the
    # start (a PDF header anywhere in the first KiB, tar's ustar at 257, ISO 9660 at 32 KiB).
    first_bytes: bytes | None


# Every kind that recognises a file unpacks it (see ``expand``); the order only sets the
# order of the children and what ``kind_of`` names.
_KINDS = (
    _Kind("tnef", tnef.recognise, tnef.unpack, False, tnef.SIGNATURE[:1]),
    _Kind("ole2", ole2.recognise, ole2.unpack, False, cfb.MAGIC[:1]),
    _Kind("rtf", rtf.recognise, rtf.unpack, False, rtf.MAGIC[:1]),
    _Kind("pdf", pdf.recognise, pdf.unpack, False, None),
    _Kind("zip", pkzip.recognise, pkzip.unpack, True, b"".join(magic[:1] for magic in pkzip.MAGIC)),
    _Kind("7z", sevenzip.recognise, sevenzip.unpack, True, sevenzip.MAGIC[:1]),
    _Kind("gzip", streams.is_gzip, streams.unpack_gzip, True, streams.GZIP_MAGIC[:1]),
    _Kind("bzip2", streams.is_bzip2, streams.unpack_bzip2, True, b"B"),
    _Kind("xz", streams.is_xz, streams.unpack_xz, True, streams.XZ_MAGIC[:1]),
    _Kind("lzip", streams.is_lzip, streams.unpack_lzip, True, streams.LZIP_MAGIC[:1]),
    _Kind("lzma", streams.is_lzma_alone, streams.unpack_lzma_alone, True, streams.LZMA_FIRST_BYTES),
    _Kind("tar", tar.recognise, tar.unpack, True, None),
    _Kind("cpio", cpio.recognise, cpio.unpack, True, cpio.FIRST_BYTES),
    _Kind("cab", cab.recognise, cab.unpack, True, cab.MAGIC[:1]),
    _Kind("iso9660", iso9660.recognise, iso9660.unpack, True, None),
    _Kind("szdd", szdd.recognise, szdd.unpack, True, szdd.MAGIC[:1]),
    _Kind("self-extractor", embedded.recognise, embedded.unpack, True, b"M"),
    _Kind("unsupported", unsupported.recognise, unsupported.unpack, True, None),  # RAR, ARJ...: unscanned
)


_LZMA = next(kind for kind in _KINDS if kind.name == "lzma")
# What a file named as a compressed stream is when no kind recognises it (see ``expand``).
_UNOPENED = _Kind("unopened", lambda data: False, streams.unpack_unopened, True, None)


def _by_first_byte(kinds: tuple[_Kind, ...]) -> tuple[tuple[_Kind, ...], ...]:
    """For each first byte (and, last, for empty data): the kinds that could recognise it, in order.

    Every object of every message is asked what it is; most are text or images, which no
    magic fits, so one table look-up spares them most of the tests.
    """
    table = [tuple(k for k in kinds if k.first_bytes is None or byte in k.first_bytes) for byte in range(256)]
    table.append(tuple(k for k in kinds if k.first_bytes is None))
    return tuple(table)


_CANDIDATES = _by_first_byte(_KINDS)
_DOCUMENT_CANDIDATES = _by_first_byte(tuple(kind for kind in _KINDS if not kind.is_archive))  # archives off
_EMPTY = 256


def capabilities() -> dict[str, bool]:
    """Which formats this installation can unpack (check at start-up, do not find out from a
    message: docs/pitfalls.md#limits-bombs-and-missing-decoders). The optional ones depend on the
    ``archives`` extra; a format listed False is reported unscanned ("unsupported"), never clean."""
    from importlib.util import find_spec

    found = {kind.name: True for kind in _KINDS if kind.name != "unsupported"}
    found["7z"] = find_spec("py7zr") is not None
    found["zip-deflate64"] = find_spec("inflate64") is not None
    found.update({name: False for name in unsupported.FORMATS})
    return found


def kind_of(data: bytes, policy: Policy) -> str | None:
    """The first container kind ``expand`` would unpack ("zip", "tnef", ...), or None."""
    kinds = _find(data, policy)
    return kinds[0].name if kinds else None


def _find(data: bytes, policy: Policy) -> list[_Kind]:
    candidates = (_CANDIDATES if policy.archives else _DOCUMENT_CANDIDATES)[data[0] if data else _EMPTY]
    return [kind for kind in candidates if kind.recognise(data)]


def expand(obj: ScanObject, budget: Budget, policy: Policy, path: str | None = None) -> list[ScanObject] | None:
    """The children of ``obj``, or None when it is not a container we look into.

    ``path``: the path the children are named under, when not ``obj.path`` (an attachment's
    members go under its file name: ``2/invoice.zip/payload.exe``).

    A file that is two formats at once (a zip whose first kilobyte also holds a PDF header,
    which Acrobat opens as a PDF) is unpacked as each of them: the union, never a choice
    the attacker made for us (docs/pitfalls.md#boundary-tricks).
    """
    kinds = _find(obj.data, policy)
    if not kinds and policy.archives and streams.named_compressed(obj):
        # A header only unlzma accepts: recognised by its name too (streams.is_lzma_alone).
        # Else a name that says compressed on bytes we cannot open: unscanned, never nothing.
        lzma_named = streams.named_lzma(obj) and streams.is_lzma_alone(obj.data, any_dictionary=True)
        kinds = [_LZMA] if lzma_named else [_UNOPENED]
    if not kinds:
        return None
    if path is not None and path != obj.path:
        # The same object named for its members; shares the bytes, no copy. Spelled out
        # because dataclasses.replace is several times slower (test_engine checks this list
        # against ScanObject's fields). Only containers get here: most objects are none.
        obj = ScanObject(obj.data, path, obj.names, obj.declared_type, obj.is_message_root, obj.depth)
    budget.check_depth(obj.depth + 1)
    members = bounded.Members(obj, budget)
    for kind in kinds:
        try:
            kind.unpack(members, obj.data, budget)
        except ExpansionIncomplete as exc:
            if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
                raise
            members.skip_path(exc.part, exc.reason, exc.detail)
        except ScanIncomplete as exc:
            if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
                raise ExpansionIncomplete(exc.reason, exc.detail, obj.path, members.children) from None
            members.skip_path(obj.path, exc.reason, exc.detail)
    return members.result()
