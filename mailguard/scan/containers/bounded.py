"""Unpacking under the message's budget: the one place where compressed bytes grow.

Every container reader hands its children to a ``Members`` collector and decompresses
through ``decompress``, which feeds the decompressor small slices of input and asks for
at most ``OUTPUT_STEP`` bytes at a time (``max_length``). Each step is charged to the
``Budget`` before the next one runs, so a 42.zip or a single member that inflates 1000:1
stops at the limit after a bounded amount of work and memory (fail closed:
docs/pitfalls.md#limits-bombs-and-missing-decoders).
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
from typing import Protocol

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

# Compressed bytes fed to a decompressor per step: small, so one step cannot outrun the budget.
INPUT_STEP = 64 * 1024
# Most bytes one decompression step may produce (the decompressor's max_length).
OUTPUT_STEP = 1024 * 1024
# Members one container may hold before we call it a bomb (ClamAV's MaxFiles default).
MAX_MEMBERS = 10_000
# Longest member name kept in a part path; longer ones are cut (names are display data only).
MAX_NAME_LENGTH = 255
# Shown in part paths for a member without a name (a hostile archive can have one).
UNNAMED = "(unnamed)"


class ExpansionIncomplete(ScanIncomplete):
    """A container could not be fully unpacked; ``children`` holds the members that were.

    The engine scans ``children`` (a zip with EICAR and an encrypted member is infected,
    not merely unscanned) and records ``part`` as unscanned for ``reason``.
    """

    def __init__(self, reason: Reason, detail: str, part: str, children: list[ScanObject]) -> None:
        super().__init__(reason, detail)
        self.part = part
        self.children = children


class Decompressor(Protocol):
    """The common shape of bz2/lzma decompressor objects (zlib is adapted to it below)."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class ZlibDecompressor:
    """zlib.decompressobj with the bz2/lzma interface: it keeps its unconsumed input itself."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._d.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        return self._d.decompress(data or self._d.unconsumed_tail, max(max_length, 0))


def member_cap(budget: Budget) -> int:
    """The most bytes one member may unpack to: a larger one would not be scanned anyway."""
    return min(budget.max_member_size, budget.max_object_size)


def decompress(
    new_decompressor: Callable[[], Decompressor],
    src: bytes | memoryview,
    budget: Budget,
    *,
    next_stream: Callable[[bytes], bytes | None] = lambda rest: None,
    input_step: int = INPUT_STEP,
) -> bytes:
    """Inflate ``src`` in bounded steps, charging every produced byte to ``budget``.

    ``next_stream(rest)`` returns the start of another stream of the same kind in the bytes
    left after the end of one, or None (gzip, bzip2 and xz files may be several streams back
    to back; their tools output them all, so we must too). A decompressor without
    ``max_length`` is bounded by a smaller ``input_step`` instead. Raises ScanIncomplete:
    LIMIT past the member cap or the message budget, CORRUPT on a bad or truncated stream.
    """
    cap = member_cap(budget)
    out = io.BytesIO()  # getvalue() hands over its buffer without a copy
    view = memoryview(src)
    pos = 0
    try:
        d = new_decompressor()
        while True:
            budget.check_time()
            if d.eof:
                following = next_stream(bytes(d.unused_data) + bytes(view[pos:pos + input_step]))
                pos += input_step
                if following is None:
                    break
                d = new_decompressor()
                piece = d.decompress(following, OUTPUT_STEP)
            elif d.needs_input and pos < len(view):
                piece = d.decompress(bytes(view[pos:pos + input_step]), OUTPUT_STEP)
                pos += input_step
            else:
                # Drain output the decompressor still holds, in bounded steps.
                piece = d.decompress(b"", OUTPUT_STEP)
                if not piece and not d.eof:
                    raise ScanIncomplete(Reason.CORRUPT, "compressed stream is truncated")
            if out.tell() + len(piece) > cap:
                raise ScanIncomplete(Reason.LIMIT, f"member unpacks to more than {cap} bytes")
            budget.charge(len(piece))
            out.write(piece)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        if isinstance(exc, lzma.LZMAError) and "memory" in str(exc).lower():
            raise ScanIncomplete(Reason.LIMIT, f"decompressor memory limit: {exc}") from None
        raise ScanIncomplete(Reason.CORRUPT, f"bad compressed stream: {exc}") from None
    return out.getvalue()


def stored(src: bytes | memoryview, budget: Budget) -> bytes:
    """A member kept uncompressed: still charged, still capped."""
    cap = member_cap(budget)
    if len(src) > cap:
        raise ScanIncomplete(Reason.LIMIT, f"member is larger than {cap} bytes")
    budget.charge(len(src))
    return bytes(src)


def bz2_decompressor() -> Decompressor:
    return bz2.BZ2Decompressor()


def xz_decompressor(budget: Budget) -> Callable[[], Decompressor]:
    """xz needs its dictionary in memory; refuse streams that ask for more than we would unpack."""
    memlimit = max(member_cap(budget), 16 * 1024 * 1024)
    return lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=memlimit)


def lzma_alone_decompressor(budget: Budget) -> Callable[[], Decompressor]:
    """The legacy ``.lzma`` format; its header names the dictionary size, limited as for xz."""
    memlimit = max(member_cap(budget), 16 * 1024 * 1024)
    return lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=memlimit)


def lzip_decompressor(budget: Budget) -> Callable[[], Decompressor]:
    memlimit = max(member_cap(budget), 16 * 1024 * 1024)
    return lambda: LzipDecompressor(memlimit)


class LzipDecompressor:
    """One lzip member with the bz2/lzma interface: its 6-byte header, then raw LZMA data.

    The lzip format fixes the LZMA properties (lc=3, lp=0, pb=2) and ends the data with an end
    marker, so liblzma's raw LZMA1 decoder reads it; the header gives the dictionary size.
    """

    _HEADER = 6

    def __init__(self, memlimit: int) -> None:
        self._memlimit = memlimit
        self._header = b""
        self._d: lzma.LZMADecompressor | None = None

    @property
    def eof(self) -> bool:
        return self._d is not None and self._d.eof

    @property
    def needs_input(self) -> bool:
        return self._d is None or self._d.needs_input

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data if self._d is not None else b""

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        if self._d is None:
            self._header += data
            if len(self._header) < self._HEADER:
                return b""
            data, coded = self._header[self._HEADER:], self._header[5]
            # lzip: dictionary size = 2^(bits 4-0) minus (bits 7-5) sixteenths of it, 4 KiB to 512 MiB.
            base = 1 << (coded & 0x1F)
            dict_size = base - (base // 16) * (coded >> 5)
            if not 4096 <= dict_size <= 512 * 1024 * 1024:
                raise lzma.LZMAError("invalid lzip dictionary size")
            if dict_size > self._memlimit:
                raise lzma.LZMAError(f"memory limit: lzip dictionary of {dict_size} bytes")
            self._d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
                {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": 3, "lp": 0, "pb": 2}])
        return self._d.decompress(data, max_length)


class Members:
    """Collects the children of one container, and the first member that could not be unpacked.

    LIMIT and TIMEOUT end the whole container at once (bombs must stop fast); an encrypted,
    unsupported or corrupt member is recorded and the others are still unpacked.
    """

    def __init__(self, parent: ScanObject, budget: Budget) -> None:
        self.parent = parent
        self.budget = budget
        self.children: list[ScanObject] = []
        self.problem: tuple[Reason, str, str] | None = None  # reason, part, detail
        self._count = 0

    def path_of(self, name: str) -> str:
        name = name[:MAX_NAME_LENGTH] or UNNAMED
        return f"{self.parent.path}/{name}" if self.parent.path else name

    def count(self) -> None:
        """Call once per member seen, unpacked or not."""
        self._count += 1
        if self._count > MAX_MEMBERS:
            raise ScanIncomplete(Reason.LIMIT, f"more than {MAX_MEMBERS} members")
        self.budget.check_time()

    def add(self, name: str, data: bytes, names: tuple[str, ...] | None = None) -> None:
        """A child at ``parent/name``; its file names are ``names``, by default ``(name,)``."""
        if names is None:
            names = (name,) if name else ()
        self.children.append(ScanObject(data=data, path=self.path_of(name), names=names, depth=self.parent.depth + 1))

    def unpack(self, name: str, produce: Callable[[], bytes], names: tuple[str, ...] | None = None) -> None:
        """Add the member ``produce()`` returns; record it as unscanned if it cannot be read."""
        try:
            self.add(name, produce(), names)
        except ScanIncomplete as exc:
            if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
                raise ExpansionIncomplete(exc.reason, exc.detail, self.path_of(name), self.children) from None
            self.skip(name, exc.reason, exc.detail)

    def skip(self, name: str, reason: Reason, detail: str) -> None:
        self.skip_path(self.path_of(name), reason, detail)

    def skip_path(self, part: str, reason: Reason, detail: str) -> None:
        """Record the first part that could not be unpacked (the others are still tried)."""
        if self.problem is None:
            self.problem = (reason, part, detail)

    def result(self) -> list[ScanObject]:
        if self.problem is not None:
            reason, part, detail = self.problem
            raise ExpansionIncomplete(reason, detail, part, self.children)
        return self.children
