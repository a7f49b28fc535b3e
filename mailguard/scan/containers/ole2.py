"""OLE2 compound files (Office 97-2003 documents, Outlook .msg): every stream is a child.

Malware rides in these as embedded objects: an OLE "Package" keeps a whole file in a
``\\x01Ole10Native`` stream (the classic "double-click the icon" attachment inside a
.doc), and an Outlook .msg keeps each attachment in a stream of its own. So each stream
becomes a child, named by its storage path; a packaged file is unwrapped to a child of
that stream, named as the package names it, an object embedded in a PowerPoint slide
is inflated, and a .msg attachment is named by its file
name (which lets the name heuristics see ``invoice.pdf.exe`` inside them too). A VBA
module's source text is decompressed to a child of its stream (see ``vba``), so that
signatures and YARA rules for macro code have the code to match. Like TNEF this is how Office carries
files, not an archive the user chose, so it is looked into whatever
``threatsense.objects.archives`` says.
"""

from __future__ import annotations

import struct

from mailguard.scan.containers import bounded, cfb, vba
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

_OLE10_NATIVE = "\x01Ole10Native"
_POWERPOINT_DOCUMENT = "PowerPoint Document"
_ENCRYPTED_PACKAGE = "EncryptedPackage"
_EX_OLE_OBJ_STG = b"\x11\x10"  # record type 0x1011, little-endian
# [MS-OXMSG] 2.1.3: property streams are named __substg1.0_ + property tag (id and type).
_MSG_ATTACH_DATA = "__substg1.0_37010102"                 # PidTagAttachDataBinary
_MSG_NAME_STREAMS = {"__substg1.0_3707001F": True, "__substg1.0_3707001E": True,   # long file name
                     "__substg1.0_3704001F": False, "__substg1.0_3704001E": False}  # 8.3 file name
_MAX_PACKAGE_STRING = 4096


def recognise(data: bytes) -> bool:
    return cfb.is_compound_file(data)


def printable(name: str) -> str:
    """Stream names start with control characters (\\x01Ole, \\x05SummaryInformation): show them."""
    return "".join(f"[{ord(c)}]" if ord(c) < 0x20 else c for c in name)


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    try:
        document = cfb.CompoundFile(data)
    except (cfb.CompoundFileError, struct.error) as exc:
        raise ScanIncomplete(Reason.CORRUPT, f"not a readable OLE2 file: {exc}") from None
    cap = bounded.member_cap(budget)
    streams = list(document.streams())
    if any(path == _ENCRYPTED_PACKAGE for path, _ in streams):
        # [MS-OFFCRYPTO] 2.3.4: a password-protected .docx/.xlsx/.pptx is an OLE2 file whose
        # EncryptedPackage stream holds the encrypted zip. Its other streams are still read.
        members.skip(_ENCRYPTED_PACKAGE, Reason.ENCRYPTED, "password-protected Office document")
    file_names = _msg_attachment_names(document, streams)
    for path, entry in streams:
        members.count()
        name = printable(path)
        if entry.size > cap:
            raise ScanIncomplete(Reason.LIMIT, f"OLE2 stream {name} is larger than {cap} bytes")
        try:
            content = document.read(entry, cap)
        except (cfb.CompoundFileError, struct.error) as exc:
            members.skip(name, Reason.CORRUPT, str(exc))
            continue
        budget.charge(len(content))
        storage, _, stream_name = path.rpartition("/")
        file_name = file_names.get(storage) if stream_name == _MSG_ATTACH_DATA else None
        if file_name:
            members.add(f"{printable(storage)}/{file_name}", content, names=(file_name,))
        else:
            members.add(name, content)
        if _is_vba_module(path):
            source = vba.module_source(content, cap)
            if source is not None:
                budget.charge(len(source))
                members.add(f"{name}/vba-source", source, names=())
        if path == _POWERPOINT_DOCUMENT:
            for number, obj in enumerate(_powerpoint_objects(content, budget), 1):
                members.add(f"{name}/ole-object-{number}", obj, names=())
        if entry.name == _OLE10_NATIVE:
            package = ole10_native(content)
            if package is not None:
                label, payload = package
                members.add(f"{name}/{label or 'package'}", payload)


def _powerpoint_objects(stream: bytes, budget: Budget) -> list[bytes]:
    """Embedded objects in a PowerPoint stream: ExOleObjStg records ([MS-PPT] 2.10.34).

    Each record is an 8-byte header (version and instance, type 0x1011, length) and an OLE2
    file, stored as is (instance 0) or zlib-compressed after its 4-byte size (instance 1).
    """
    found = []
    position = stream.find(_EX_OLE_OBJ_STG)
    while position >= 2:
        header = position - 2
        version_instance, _type, length = struct.unpack_from("<HHI", stream, header) if header + 8 <= len(stream) \
            else (1, 0, 0)
        body = stream[header + 8:header + 8 + length]
        if version_instance & 0x000F == 0 and len(body) == length:
            if version_instance >> 4 == 1 and len(body) > 4:
                try:
                    found.append(bounded.decompress(lambda: bounded.ZlibDecompressor(15), body[4:], budget))
                except ScanIncomplete as exc:
                    if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
                        raise
            elif version_instance >> 4 == 0:
                found.append(body)
        position = stream.find(_EX_OLE_OBJ_STG, position + 2)
    return found


def _is_vba_module(path: str) -> bool:
    """A stream in a VBA storage that is a module ([MS-OVBA] 2.2: not dir, _VBA_PROJECT or __SRP_n)."""
    storage, _, stream = path.rpartition("/")
    return (storage.rsplit("/", 1)[-1].upper() == "VBA" and stream.lower() not in ("dir", "_vba_project")
            and not stream.startswith("__SRP_"))


def _msg_attachment_names(document: cfb.CompoundFile, streams: list[tuple[str, cfb.DirectoryEntry]]
                          ) -> dict[str, str]:
    """Outlook .msg ([MS-OXMSG] 2.2.2): attachment storage path -> the attachment's file name."""
    found: dict[str, str] = {}
    for path, entry in streams:
        storage, _, stream_name = path.rpartition("/")
        if stream_name not in _MSG_NAME_STREAMS or entry.size > _MAX_PACKAGE_STRING:
            continue
        try:
            raw = document.read(entry, _MAX_PACKAGE_STRING)
        except (cfb.CompoundFileError, struct.error):
            continue
        encoding = "utf-16-le" if stream_name.endswith("001F") else "cp1252"
        name = raw.decode(encoding, "replace").split("\x00", 1)[0]
        # The long file name wins over the 8.3 one, whatever order the streams come in.
        if name and (storage not in found or _MSG_NAME_STREAMS[stream_name]):
            found[storage] = name
    return found


def ole10_native(stream: bytes) -> tuple[str, bytes] | None:
    """The file in an OLE Package stream: (its label, its bytes), or None if it is not one.

    Layout (as written by packager.exe and Office): total size (4), type (2), label NUL,
    original path NUL, two reserved words (4), temp path length (4) and temp path, data
    length (4), data.
    """
    try:
        pos = 6
        label, pos = _c_string(stream, pos)
        _, pos = _c_string(stream, pos)
        pos += 4
        (temp_length,) = struct.unpack_from("<I", stream, pos)
        pos += 4 + temp_length
        (data_length,) = struct.unpack_from("<I", stream, pos)
        pos += 4
    except (struct.error, ValueError):
        return None
    if pos + data_length > len(stream) or temp_length > len(stream):
        return None
    return label, stream[pos:pos + data_length]


def _c_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos, pos + _MAX_PACKAGE_STRING)
    if end < 0:
        raise ValueError("unterminated string")
    return data[pos:end].decode("cp1252", "replace"), end + 1
