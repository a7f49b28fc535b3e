"""Builders for the containers and files the container and detector tests feed in.

Everything is made here, in memory, from the standard library (plus py7zr when present):
no binary fixtures in the repository, and each builder is small enough to read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib

from mailguard.scan.containers import expand
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.policy import Policy

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, *, zip64: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in files.items():
            if zip64:
                with archive.open(zipfile.ZipInfo(name), "w", force_zip64=True) as member:
                    member.write(data)
            else:
                archive.writestr(name, data)
    return out.getvalue()


def make_tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gz(data: bytes, name: str | None = None) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename=name or "", mode="wb", fileobj=out, mtime=0) as stream:
        stream.write(data)
    return out.getvalue()


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data)


def lzma_alone(data: bytes, **options: int) -> bytes:
    """The legacy ``.lzma`` format (``lzma``, ``xz --format=lzma``): 13-byte header, size unknown."""
    if options:
        return lzma.compress(data, format=lzma.FORMAT_ALONE, filters=[{"id": lzma.FILTER_LZMA1, **options}])
    return lzma.compress(data, format=lzma.FORMAT_ALONE)


def lzip(data: bytes, dict_size: int = 1 << 16) -> bytes:
    """One lzip member, built from its specification: header, LZMA data with end marker, trailer."""
    import struct
    import zlib

    packed = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[
        {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": 3, "lp": 0, "pb": 2}])
    header = b"LZIP\x01" + bytes([dict_size.bit_length() - 1])  # a power of two: no fraction bits
    return header + packed + struct.pack("<IQQ", zlib.crc32(data), len(data), len(header) + len(packed) + 20)


def make_7z(files: dict[str, bytes], password: str | None = None, header_encryption: bool = False) -> bytes:
    import py7zr

    out = io.BytesIO()
    with py7zr.SevenZipFile(out, "w", password=password, header_encryption=header_encryption) as archive:
        for name, data in files.items():
            archive.writestr(data, name)
    return out.getvalue()


def pe_stub(size: int = 1024) -> bytes:
    """The start of a Windows program: MZ, e_lfanew at 0x3C, and a PE header there."""
    header = bytearray(b"MZ" + bytes(0x3A)) + struct.pack("<I", 0x80)
    header += bytes(0x80 - len(header)) + b"PE\x00\x00"
    return bytes(header) + bytes(max(0, size - len(header)))


def zeros_deflated(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, made without holding them all in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    parts.append(compressor.compress(bytes(size % len(block))))
    parts.append(compressor.flush())
    return b"".join(parts)


def zip_with_raw_member(name: str, raw: bytes, size: int, crc: int = 0) -> bytes:
    """A one-member deflate zip from an already compressed stream (for bombs we cannot afford to inflate)."""
    encoded = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(raw), size, len(encoded), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(raw), size,
                          len(encoded), 0, 0, 0, 0, 0, 0)
    body = local + encoded + raw
    directory = central + encoded
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


def overlapping_zip(member: bytes, copies: int) -> bytes:
    """Fifield's trick in its simplest form: many central entries pointing at one local file."""
    single = make_zip({"kernel.bin": member})
    end_at = single.rfind(b"PK\x05\x06")
    central_at = struct.unpack_from("<I", single, end_at + 16)[0]
    central = single[central_at:end_at]
    body = single[:central_at]
    directory = b""
    for number in range(copies):
        name = f"file{number:04d}.bin".encode()
        entry = bytearray(central[:46])
        struct.pack_into("<H", entry, 28, len(name))
        directory += bytes(entry) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, copies, copies, len(directory), len(body), 0)
    return body + directory + end


def make_cpio(files: dict[str, bytes], fmt: str = "newc") -> bytes:
    """A cpio archive in the newc, odc or old binary (little-endian) format, with its trailer."""
    out = bytearray()

    def pad(alignment: int) -> None:
        out.extend(bytes(-len(out) % alignment))

    for name, data, mode in [(n, d, 0o100644) for n, d in files.items()] + [("TRAILER!!!", b"", 0)]:
        raw_name = name.encode() + b"\x00"
        if fmt == "newc":
            fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw_name), 0]
            out += b"070701" + b"".join(b"%08X" % v for v in fields) + raw_name
            pad(4)
            out += data
            pad(4)
        elif fmt == "odc":
            out += (b"070707" + b"%06o" % 0 * 2 + b"%06o" % mode + b"%06o" % 0 * 2 + b"%06o" % 1 + b"%06o" % 0
                    + b"%011o" % 0 + b"%06o" % len(raw_name) + b"%011o" % len(data) + raw_name + data)
        else:
            out += struct.pack("<13H", 0o070707, 0, 0, mode, 0, 0, 1, 0, 0, 0, len(raw_name),
                               len(data) >> 16, len(data) & 0xFFFF) + raw_name
            pad(2)
            out += data
            pad(2)
    return bytes(out)


def make_iso(files: dict[str, bytes]) -> bytes:
    """A minimal ISO 9660 image: primary descriptor, root directory, one subdirectory level."""
    def record(name: bytes, extent: int, size: int, directory: bool) -> bytes:
        length = 33 + len(name) + (len(name) + 1) % 2
        raw = struct.pack("<BBII", length, 0, extent, 0) + struct.pack("<II", size, 0) + bytes(7)
        raw += bytes((0x02 if directory else 0, 0, 0)) + struct.pack("<HH", 1, 0) + bytes((len(name),)) + name
        return raw + bytes(length - len(raw))

    sector = 2048
    tree: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        folder, _, name = path.rpartition("/")
        tree.setdefault(folder, {})[name] = data
    tree.setdefault("", {})
    folders = sorted(tree)                          # "" (root) first
    next_sector = 19                                # 16 PVD, 17 terminator, 18 spare
    folder_sector = {f: next_sector + i for i, f in enumerate(folders)}
    next_sector += len(folders)
    file_sector, blobs = {}, []
    for folder in folders:
        for name, data in tree[folder].items():
            file_sector[(folder, name)] = next_sector
            blobs.append((next_sector, data))
            next_sector += max(1, (len(data) + sector - 1) // sector)
    image = bytearray(next_sector * sector)
    for folder in folders:
        body = record(b"\x00", folder_sector[folder], sector, True) + record(b"\x01", folder_sector[""], sector, True)
        for sub in folders:
            if sub and sub.rpartition("/")[0] == folder:
                body += record(sub.rpartition("/")[2].upper().encode(), folder_sector[sub], sector, True)
        for name, data in tree[folder].items():
            body += record(name.upper().encode() + b";1", file_sector[(folder, name)], len(data), False)
        start = folder_sector[folder] * sector
        image[start:start + len(body)] = body
    for start, data in blobs:
        image[start * sector:start * sector + len(data)] = data
    pvd = bytearray(sector)
    pvd[0:7] = b"\x01CD001\x01"
    struct.pack_into("<H", pvd, 128, sector)
    pvd[156:156 + 34] = record(b"\x00", folder_sector[""], sector, True)
    image[16 * sector:17 * sector] = pvd
    image[17 * sector:17 * sector + 7] = b"\xffCD001\x01"
    return bytes(image)


def make_cab(files: dict[str, bytes], *, mszip: bool = True, block: int = 32768) -> bytes:
    """A one-folder cabinet ([MS-CAB]); MSZIP blocks each use the previous block as dictionary."""
    stream = b"".join(files.values())
    blocks = []
    for start in range(0, max(len(stream), 1), block):
        chunk = stream[start:start + block]
        if mszip:
            dictionary = stream[max(0, start - 32768):start]
            packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=dictionary) if dictionary else \
                zlib.compressobj(9, zlib.DEFLATED, -15)
            packed = b"CK" + packer.compress(chunk) + packer.flush()
        else:
            packed = chunk
        blocks.append(struct.pack("<IHH", 0, len(packed), len(chunk)) + packed)
    entries, offset = b"", 0
    for name, data in files.items():
        entries += struct.pack("<IIHHHH", len(data), offset, 0, 0, 0, 0x20) + name.encode() + b"\x00"
        offset += len(data)
    header_size, folder_size = 36, 8
    files_offset = header_size + folder_size
    data_offset = files_offset + len(entries)
    total = data_offset + sum(len(b) for b in blocks)
    header = struct.pack("<4sIIIIIBBHHHHH", b"MSCF", 0, total, 0, files_offset, 0, 3, 1, 1, len(files), 0, 0, 0)
    folder = struct.pack("<IHH", data_offset, len(blocks), 1 if mszip else 0)
    return header + folder + entries + b"".join(blocks)


# -- ZipCrypto (APPNOTE 6.1, "traditional PKWARE encryption"), so encrypted zips need no tool --

def _crc_byte(crc: int, byte: int) -> int:
    return zlib.crc32(bytes((byte,)), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def zipcrypto_zip(name: str, data: bytes, password: bytes) -> bytes:
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_byte(keys[2], keys[1] >> 24)

    def encrypt(plain: bytes) -> bytes:
        out = bytearray()
        for byte in plain:
            temp = (keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            update(byte)
        return bytes(out)

    for byte in password:
        update(byte)
    crc = zlib.crc32(data)
    header = bytes(range(11)) + bytes((crc >> 24,))  # last byte checks the password (APPNOTE 6.1.6)
    raw = encrypt(header + data)
    encoded = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 1, 0, 0, 0, crc, len(raw), len(data), len(encoded), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 1, 0, 0, 0, crc, len(raw), len(data),
                          len(encoded), 0, 0, 0, 0, 0, 0)
    body = local + encoded + raw
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), len(body), 0)
    return body + central + encoded + end


# -- TNEF ([MS-OXTNEF]) --

def _tnef_attribute(level: int, attribute: int, data: bytes) -> bytes:
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def _mapi_string_property(prop_id: int, text: str) -> bytes:
    raw = text.encode("utf-16-le") + b"\x00\x00"
    padding = b"\x00" * (-len(raw) % 4)
    return struct.pack("<HHII", 0x001F, prop_id, 1, len(raw)) + raw + padding


def make_tnef(attachments: list[tuple[str, bytes]], *, long_names: bool = True) -> bytes:
    """A winmail.dat: a message class, then per attachment its rendering, title, data and MAPI names."""
    out = bytearray(b"\x78\x9f\x3e\x22" + struct.pack("<H", 0x0101))
    out += _tnef_attribute(1, 0x00089006, b"\x00\x00\x01\x00")              # attTnefVersion
    out += _tnef_attribute(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")   # attMessageClass
    for name, data in attachments:
        out += _tnef_attribute(2, 0x00069002, bytes(14))                    # attAttachRendData
        out += _tnef_attribute(2, 0x00018010, name[:8].encode("latin-1") + b"\x00")  # 8.3 title
        out += _tnef_attribute(2, 0x0006800F, data)                         # attAttachData
        if long_names:
            properties = struct.pack("<I", 1) + _mapi_string_property(0x3707, name)
            out += _tnef_attribute(2, 0x00069005, properties)               # attAttachment
    return bytes(out)


# -- OLE2 compound files ([MS-CFB]) --

def make_ole(names: list[tuple[str, int]], contents: dict[str, bytes] | None = None) -> bytes:
    """A 512-byte-sector compound file: header, one FAT sector, directory sectors, stream sectors.

    ``names`` are (path, type) with type 1 storage, 2 stream; a path "Storage/Stream" puts the
    stream in that storage (declared earlier). Siblings form a right-leaning tree. ``contents``
    gives stream bytes by path. The mini-stream cutoff is 0, so every stream lives in regular
    sectors (real files from clamav-testfiles exercise the mini stream).
    """
    contents = contents or {}
    entries = [("", "Root Entry", 5)] + [(path, path.rsplit("/", 1)[-1], kind) for path, kind in names]
    index_of = {path: index for index, (path, _, _) in enumerate(entries)}
    children_of: dict[int, list[int]] = {}
    for index, (path, _, _) in enumerate(entries[1:], 1):
        parent = index_of[path.rsplit("/", 1)[0]] if "/" in path else 0
        children_of.setdefault(parent, []).append(index)
    right = {}
    for siblings in children_of.values():
        for a, b in zip(siblings, siblings[1:]):
            right[a] = b
    layout: list[tuple[int, int]] = []  # (start sector, size) per entry
    next_sector = 1 + (len(entries) * 128 + 511) // 512  # after the FAT and the directory
    stream_sectors = bytearray()
    for path, _, _ in entries:
        data = contents.get(path, b"") if path else b""
        count = (len(data) + 511) // 512
        layout.append((next_sector if count else 0xFFFFFFFE, len(data)))
        next_sector += count
        stream_sectors += data + bytes(-len(data) % 512)
    directory = bytearray()
    for index, (_, name, kind) in enumerate(entries):
        raw = name.encode("utf-16-le") + b"\x00\x00"
        entry = bytearray(128)
        entry[:len(raw)] = raw
        struct.pack_into("<HBB", entry, 64, len(raw), kind, 1)
        child = children_of.get(index, [0xFFFFFFFF])[0]
        struct.pack_into("<III", entry, 68, 0xFFFFFFFF, right.get(index, 0xFFFFFFFF), child)
        struct.pack_into("<IQ", entry, 116, *layout[index])
        directory += entry
    directory += bytes(-len(directory) % 512)
    directory_sectors = len(directory) // 512
    fat = [0xFFFFFFFD]  # sector 0 holds the FAT itself
    for n in range(directory_sectors):
        fat.append(n + 2 if n + 1 < directory_sectors else 0xFFFFFFFE)
    for start, size in layout:
        count = (size + 511) // 512
        for k in range(count):
            fat.append(start + k + 1 if k + 1 < count else 0xFFFFFFFE)
    assert len(fat) <= 128, "make_ole makes small files only"
    fat += [0xFFFFFFFF] * (128 - len(fat))
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9)
    struct.pack_into("<H", header, 0x20, 6)
    struct.pack_into("<IIII", header, 0x2C, 1, 1, 0, 0)  # FAT sectors, first directory sector, -, cutoff 0
    struct.pack_into("<IIII", header, 0x3C, 0xFFFFFFFE, 0, 0xFFFFFFFE, 0)
    struct.pack_into("<109I", header, 0x4C, *([0] + [0xFFFFFFFF] * 108))
    return bytes(header) + struct.pack("<128I", *fat) + bytes(directory) + bytes(stream_sectors)


def vba_container(text: bytes) -> bytes:
    """An [MS-OVBA] 2.4.1 compressed container: full 4096-byte chunks stored raw, the last one
    as literal tokens (valid, just not small; copy tokens are tested with the spec's examples)."""
    out = bytearray(b"\x01")
    full = len(text) // 4096 * 4096
    for start in range(0, full, 4096):
        out += struct.pack("<H", 0x3FFF) + text[start:start + 4096]  # raw chunk (flag bit 15 clear)
    rest = text[full:]
    if rest:
        body = bytearray()
        for k in range(0, len(rest), 8):
            body += b"\x00" + rest[k:k + 8]  # a flag byte of zeros: up to eight literal bytes follow
        out += struct.pack("<H", 0xB000 | (len(body) + 2 - 3)) + body
    return bytes(out)


def ole_package(label: str, data: bytes) -> bytes:
    """An OLE Package (\\x01Ole10Native stream) holding ``data`` as the file ``label``."""
    temp = f"C:\\Temp\\{label}".encode() + b"\x00"
    body = (struct.pack("<H", 2) + label.encode() + b"\x00" + f"C:\\{label}".encode() + b"\x00"
            + struct.pack("<HH", 0, 3) + struct.pack("<I", len(temp)) + temp + struct.pack("<I", len(data)) + data)
    return struct.pack("<I", len(body)) + body


# -- RTF embedded objects ([MS-OLEDS] 2.2.4) --

def ole1_object(class_name: str, native: bytes) -> bytes:
    def prefixed(text: str) -> bytes:
        raw = text.encode() + b"\x00" if text else b""
        return struct.pack("<I", len(raw)) + raw

    return (struct.pack("<II", 0x0501, 2) + prefixed(class_name) + prefixed("") + prefixed("")
            + struct.pack("<I", len(native)) + native)


def make_rtf(*objects: bytes, obfuscate: bool = False) -> bytes:
    out = b"{\\rtf1\\ansi{\\fonttbl{\\f0 Times;}}Please open the attachment below.\\par\n"
    for obj in objects:
        hexdigits = obj.hex().encode()
        if obfuscate:  # what exploit kits do: line breaks, spaces and stray control words in the hex
            hexdigits = b"\r\n".join(b" ".join(hexdigits[i:i + 8][k:k + 4] for k in (0, 4))
                                      for i in range(0, len(hexdigits), 8))
            hexdigits = hexdigits.replace(b"0", b"\\bin0 0", 3)
        out += b"{\\object\\objemb{\\*\\objclass Package}{\\*\\objdata " + hexdigits + b"}}\n"
    return out + b"}"


# -- PDF (ISO 32000-1 §7.3) --

def make_pdf(objects: list[tuple[bytes, bytes | None]], *, prefix: bytes = b"", trailer: bytes = b"") -> bytes:
    """A PDF with these (dictionary, stream or None) objects, numbered from 1; no xref (readers rebuild it)."""
    out = prefix + b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    for number, (dictionary, stream) in enumerate(objects, 1):
        out += b"%d 0 obj\n" % number + dictionary
        if stream is not None:
            out += b"\nstream\r\n" + stream + b"\r\nendstream"
        out += b"\nendobj\n"
    return out + b"trailer\n<< /Root 1 0 R " + trailer + b">>\n%%EOF\n"


# -- walking --

def walk(obj: ScanObject, policy: Policy | None = None, budget: Budget | None = None
         ) -> tuple[dict[str, bytes], list[ScanIncomplete]]:
    """Expand ``obj`` recursively as the engine does: every object by path, and every incomplete."""
    policy = policy or Policy()
    budget = budget or Budget.for_message(policy)
    seen: dict[str, bytes] = {}
    problems: list[ScanIncomplete] = []
    pending = [obj]
    while pending:
        current = pending.pop()
        seen[current.path] = current.data
        try:
            children = expand(current, budget, policy) or []
        except ScanIncomplete as exc:
            problems.append(exc)
            children = getattr(exc, "children", [])
        pending.extend(reversed(children))
    return seen, problems
