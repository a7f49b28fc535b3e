"""TNEF (winmail.dat, application/ms-tnef): the attachments Outlook hides inside it.

TNEF is a flat list of attributes, each ``level (1) | id (4) | length (4) | data | checksum (2)``
after a 4-byte signature and a 2-byte key ([MS-OXTNEF] 2.1.3). An attachment starts with
attAttachRendData; its bytes are in attAttachData, its name in attAttachTitle or, in full,
in PR_ATTACH_LONG_FILENAME inside the attAttachment MAPI property list. Embedded messages
and OLE objects come as PR_ATTACH_DATA_OBJ, whose data (after a 16-byte interface id) is
itself TNEF or the object: those become children too, and are expanded again by magic.

We parse it ourselves (the format is small) so every length is checked against the data:
a damaged TNEF is CORRUPT, never clean (docs/pitfalls.md#tnef). Checksums are not enforced: the
bytes are scanned whatever the checksum says, so a wrong one hides nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

SIGNATURE = b"\x78\x9f\x3e\x22"  # 0x223E9F78, little-endian ([MS-OXTNEF] 2.1.3.1)

_LEVEL_MESSAGE, _LEVEL_ATTACHMENT = 0x01, 0x02
# [MS-OXTNEF] 2.1.3.3: attribute ids (low word) we read
_ATT_ATTACH_DATA = 0x800F
_ATT_ATTACH_TITLE = 0x8010
_ATT_ATTACH_REND_DATA = 0x9002
_ATT_ATTACHMENT = 0x9005
# MAPI property ids ([MS-OXPROPS])
_PR_ATTACH_DATA_OBJ = 0x3701
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_LONG_FILENAME = 0x3707
# MAPI property types ([MS-OXCDATA] 2.11.1) and the size of one fixed-size value, padded to 4
_FIXED_SIZES = {0x0002: 4, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4, 0x000B: 4,
                0x0014: 8, 0x0040: 8, 0x0048: 16}
_PT_STRING8, _PT_UNICODE, _PT_BINARY, _PT_OBJECT = 0x001E, 0x001F, 0x0102, 0x000D
_MV_FLAG = 0x1000
# Properties in one MAPI list / values in one property: more is a hostile file.
_MAX_PROPERTIES = 10_000
_MAX_VALUES = 10_000


def recognise(data: bytes) -> bool:
    return data[:4] == SIGNATURE


@dataclass
class _Attachment:
    title: str = ""
    long_name: str = ""
    data: bytes | None = None
    objects: list[bytes] = field(default_factory=list)

    def name(self, index: int) -> str:
        return self.long_name or self.title or f"attachment-{index}"


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    attachments = _parse(data)
    for index, attachment in enumerate(attachments, 1):
        name = attachment.name(index)
        if attachment.data is not None:
            members.count()
            members.unpack(name, lambda payload=attachment.data: bounded.stored(payload, budget))
        for number, payload in enumerate(attachment.objects, 1):
            if payload == attachment.data:
                continue
            members.count()
            object_name = name if attachment.data is None else f"{name}.object-{number}"
            members.unpack(object_name, lambda payload=payload: bounded.stored(payload, budget))


def _parse(data: bytes) -> list[_Attachment]:
    if len(data) < 6 or not recognise(data):
        raise ScanIncomplete(Reason.CORRUPT, "not a TNEF stream")
    attachments: list[_Attachment] = []
    pos = 6  # signature (4) and legacy key (2)
    # Fewer bytes than an attribute header after the last attribute are padding some mailers
    # add (a final newline); they cannot hold an attachment.
    while pos + 9 <= len(data):
        level = data[pos]
        (attribute, length) = struct.unpack_from("<II", data, pos + 1)
        start = pos + 9
        end = start + length
        if end + 2 > len(data):
            raise ScanIncomplete(Reason.CORRUPT, "TNEF attribute runs past the end")
        if level not in (_LEVEL_MESSAGE, _LEVEL_ATTACHMENT):
            raise ScanIncomplete(Reason.CORRUPT, f"TNEF attribute level {level}")
        value = data[start:end]
        attribute_id = attribute & 0xFFFF
        if level == _LEVEL_ATTACHMENT:
            if attribute_id == _ATT_ATTACH_REND_DATA or not attachments:
                attachments.append(_Attachment())
            current = attachments[-1]
            if attribute_id == _ATT_ATTACH_DATA:
                current.data = value
            elif attribute_id == _ATT_ATTACH_TITLE:
                current.title = value.split(b"\x00", 1)[0].decode("cp1252", "replace")
            elif attribute_id == _ATT_ATTACHMENT:
                _read_attachment_properties(value, current)
        pos = end + 2  # skip the checksum
    return attachments


def _read_attachment_properties(block: bytes, attachment: _Attachment) -> None:
    for prop_id, prop_type, values in _mapi_properties(block):
        if prop_id in (_PR_ATTACH_LONG_FILENAME, _PR_ATTACH_FILENAME) and values:
            name = _decode_string(prop_type, values[0])
            if prop_id == _PR_ATTACH_LONG_FILENAME or not attachment.long_name:
                attachment.long_name = name
        elif prop_id == _PR_ATTACH_DATA_OBJ:
            for value in values:
                # PtypObject data starts with the 16-byte interface id of the object ([MS-OXTNEF] 2.1.3.5).
                attachment.objects.append(value[16:] if prop_type == _PT_OBJECT else value)


def _decode_string(prop_type: int, raw: bytes) -> str:
    if prop_type & ~_MV_FLAG == _PT_UNICODE:
        return raw.decode("utf-16-le", "replace").split("\x00", 1)[0]
    return raw.split(b"\x00", 1)[0].decode("cp1252", "replace")


def _mapi_properties(block: bytes) -> list[tuple[int, int, list[bytes]]]:
    """[MS-OXTNEF] 2.1.3.4 MsgPropertyList: count, then (type, id, [name], values) per property."""
    reader = _Reader(block)
    count = reader.u32()
    if count > _MAX_PROPERTIES:
        raise ScanIncomplete(Reason.CORRUPT, "TNEF property list is too long")
    properties = []
    for _ in range(count):
        prop_type, prop_id = reader.u16(), reader.u16()
        if prop_id >= 0x8000:  # a named property: GUID, kind, then a number or a name
            reader.take(16)
            if reader.u32() == 0:
                reader.take(4)
            else:
                reader.take(_padded(reader.u32()))
        properties.append((prop_id, prop_type, _values(reader, prop_type)))
    return properties


def _values(reader: "_Reader", prop_type: int) -> list[bytes]:
    base = prop_type & ~_MV_FLAG
    variable = base in (_PT_STRING8, _PT_UNICODE, _PT_BINARY, _PT_OBJECT)
    # Variable-size values and multi-valued properties carry a count; a single fixed value does not.
    count = reader.u32() if variable or prop_type & _MV_FLAG else 1
    if count > _MAX_VALUES:
        raise ScanIncomplete(Reason.CORRUPT, "TNEF property has too many values")
    values = []
    for _ in range(count):
        if variable:
            length = reader.u32()
            values.append(reader.take(length))
            reader.take(_padded(length) - length)
        elif base in _FIXED_SIZES:
            values.append(reader.take(_FIXED_SIZES[base]))
        else:
            raise ScanIncomplete(Reason.CORRUPT, f"unknown MAPI property type {prop_type:#06x}")
    return values


def _padded(length: int) -> int:
    return (length + 3) & ~3


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ScanIncomplete(Reason.CORRUPT, "TNEF property list is truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]
