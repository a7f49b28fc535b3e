"""Archive formats we recognise but cannot unpack: reported UNSUPPORTED, never clean.

docs/pitfalls.md#limits-bombs-and-missing-decoders: a distribution's ClamAV without its RAR module
reported a compressed
EICAR as clean. An archive we cannot open must make the message ``unscanned`` (and so
tagged, or blocked under ``on-scan-error = block``), not pass as if we had looked.
Each format here is recognised by its magic bytes only.
"""

from __future__ import annotations

from collections.abc import Callable

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

# format name -> test on the first bytes
FORMATS: dict[str, Callable[[bytes], bool]] = {
    "RAR": lambda d: d[:7] == b"Rar!\x1a\x07\x00" or d[:8] == b"Rar!\x1a\x07\x01\x00",
    "ARJ": lambda d: d[:2] == b"\x60\xea" and len(d) > 10 and 0 < int.from_bytes(d[2:4], "little") <= 2600,
    "ACE": lambda d: d[7:14] == b"**ACE**",
    "LZH": lambda d: d[2:4] == b"-l" and d[6:7] == b"-" and d[4:6] in (b"h0", b"h1", b"h4", b"h5", b"h6",
                                                                       b"h7", b"zs", b"z5", b"hd"),
    "CHM": lambda d: d[:8] == b"ITSF\x03\x00\x00\x00",
    "ZOO": lambda d: d[20:24] == b"\xdc\xa7\xc4\xfd",
    "StuffIt": lambda d: d[:4] == b"SIT!" or d[:8] == b"StuffIt ",
    "UDF/ISO 13346 image": lambda d: d[32769:32774] in (b"BEA01", b"NSR02", b"NSR03"),
    "Windows imaging (WIM)": lambda d: d[:8] == b"MSWIM\x00\x00\x00",
    "virtual disk (VHD/VHDX)": lambda d: d[:8] in (b"conectix", b"vhdxfile"),
    "FAT disk image": lambda d: d[510:512] == b"\x55\xaa" and (d[54:59] in (b"FAT12", b"FAT16")
                                                              or d[82:87] == b"FAT32"),
    # zstd and lz4 frames, and the skippable frames both formats may start with (zstd -d skips them).
    "zstd stream": lambda d: d[:4] == b"\x28\xb5\x2f\xfd" or (d[1:4] == b"\x2a\x4d\x18" and 0x50 <= d[0] <= 0x5F),
    "lz4 frame": lambda d: d[:4] in (b"\x04\x22\x4d\x18", b"\x02\x21\x4c\x18"),  # current and legacy
    # The old Unix compressors, which gzip -d still opens: compress (LZW, .Z) and pack (Huffman, .z).
    "Unix compress (.Z)": lambda d: d[:2] == b"\x1f\x9d" and len(d) > 3,
    "pack (.z)": lambda d: d[:2] == b"\x1f\x1e" and len(d) > 6,
    "lzop": lambda d: d[:9] == b"\x89LZO\x00\r\n\x1a\n",
}


# ``recognise`` runs on every object of every message, so before the list above it asks
# one cheap question each format needs the answer yes to: its first byte, when it is
# tested at the start of the file; else the bytes at its offset (ACE, LZH, ZOO, FAT), or
# the size that reaches it (UDF). test_containers checks this against the list.
_FIRST_BYTES = frozenset(b"R`ISMcv(\x04\x02\x1f\x89" + bytes(range(0x50, 0x60)))
_UDF_END = 32774


def format_of(data: bytes) -> str | None:
    for name, test in FORMATS.items():
        if test(data):
            return name
    return None


def recognise(data: bytes) -> bool:
    if not (data[:1] and data[0] in _FIRST_BYTES or data[2:4] == b"-l" or data[7:14] == b"**ACE**"
            or data[20:24] == b"\xdc\xa7\xc4\xfd" or data[510:512] == b"\x55\xaa" or len(data) >= _UDF_END):
        return False
    return format_of(data) is not None


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    raise ScanIncomplete(Reason.UNSUPPORTED, f"{format_of(data)} archives cannot be unpacked by mailguard")
