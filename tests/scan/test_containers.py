"""containers.expand: every container kind, nesting, bombs, encryption, damage and fuzzing."""

from __future__ import annotations

import random
import struct
import subprocess
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailguard.scan.containers import ExpansionIncomplete, capabilities, expand, kind_of, unsupported, vba
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Reason
from tests.peers import require, require_clamav_testfiles
from tests.scan.archives import (
    EICAR, bz, gz, lzip, lzma_alone, make_7z, make_cab, make_cpio, make_iso, make_ole, make_pdf, make_rtf, make_tar,
    make_tnef, make_zip, ole1_object, ole_package, overlapping_zip, pe_stub, vba_container, walk, xz, zeros_deflated,
    zip_with_raw_member, zipcrypto_zip,
)

MIB = 1024 * 1024


def obj(data: bytes, path: str = "2/file", name: str = "") -> ScanObject:
    return ScanObject(data, path, (name,) if name else ())


def children(data: bytes, policy: Policy | None = None, **kwargs) -> list[ScanObject]:
    policy = policy or Policy()
    result = expand(obj(data, **kwargs), Budget.for_message(policy), policy)
    assert result is not None
    return result


# -- recognition --

@pytest.mark.parametrize("data", [b"", b"plain text", b"PK\x07\x08", b"\x1f\x8b\x07xxxx",
                                  b"BZh9notablock", EICAR])
def test_non_containers_give_none(data):
    assert expand(obj(data), Budget.for_message(Policy()), Policy()) is None


def test_recognised_by_magic_not_by_name():
    got = children(make_zip({"eicar.com": EICAR}), name="invoice.pdf")
    assert [c.data for c in got] == [EICAR]


def test_archives_off_leaves_archives_but_not_tnef():
    policy = Policy(archives=False)
    assert expand(obj(make_zip({"a": EICAR})), Budget.for_message(policy), policy) is None
    assert kind_of(make_tnef([("eicar.com", EICAR)]), policy) == "tnef"


def test_capabilities_name_every_kind():
    found = capabilities()
    assert {"zip", "7z", "tar", "cpio", "cab", "iso9660", "szdd", "self-extractor", "gzip", "bzip2", "xz",
            "lzip", "lzma", "tnef", "ole2", "rtf", "pdf", "zip-deflate64"} == {
               name for name in found if name not in unsupported.FORMATS}
    assert found["zip"] and found["tnef"] and not found["RAR"]


@pytest.mark.parametrize("data,name", [
    (b"Rar!\x1a\x07\x00" + bytes(40), "RAR"),
    (b"Rar!\x1a\x07\x01\x00" + bytes(40), "RAR"),
    (b"\x60\xea\x26\x00" + bytes(40), "ARJ"),
    (bytes(7) + b"**ACE**" + bytes(40), "ACE"),
    (b"\x00\x00-lh5-" + bytes(40), "LZH"),
    (b"ITSF\x03\x00\x00\x00" + bytes(40), "CHM"),
    (b"\x28\xb5\x2f\xfd" + bytes(40), "zstd"),
    (b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd\x28\xb5\x2f\xfd" + bytes(40), "zstd"),  # a skippable frame first
    (b"\x04\x22\x4d\x18" + bytes(40), "lz4"),
    (b"\x1f\x9d\x90" + bytes(40), "compress"),
    (b"\x1f\x1e" + bytes(40), "pack"),
    (b"\x89LZO\x00\r\n\x1a\n" + bytes(40), "lzop"),
])
def test_known_but_unsupported_archives_are_unscanned_never_clean(data, name):
    with pytest.raises(ScanIncomplete) as caught:
        children(data)
    assert caught.value.reason is Reason.UNSUPPORTED and name in caught.value.detail
    assert expand(obj(data), Budget.for_message(Policy(archives=False)), Policy(archives=False)) is None


@pytest.mark.peer
@pytest.mark.parametrize("name", ["clam.arj", "clam.chm"])
def test_clamav_testfiles_we_cannot_open_are_unsupported(name):
    data = (Path(require_clamav_testfiles()) / name).read_bytes()
    with pytest.raises(ScanIncomplete) as caught:
        children(data)
    assert caught.value.reason is Reason.UNSUPPORTED


# -- each kind --

@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_members_by_method(method):
    got = children(make_zip({"docs/eicar.com": EICAR, "readme.txt": b"hello"}, method), path="2/invoice.zip")
    assert [(c.path, c.names, c.data, c.depth) for c in got] == [
        ("2/invoice.zip/docs/eicar.com", ("docs/eicar.com",), EICAR, 1),
        ("2/invoice.zip/readme.txt", ("readme.txt",), b"hello", 1),
    ]


def test_zip64_member():
    data = make_zip({"eicar.com": EICAR}, zip64=True)
    assert b"\x01\x00" in data  # the zip64 extra field id
    assert [c.data for c in children(data)] == [EICAR]


def _drop_central_entries(data: bytes, keep: int) -> bytes:
    """The zip with only its last ``keep`` central directory entries (the others become orphans)."""
    end_at = data.rfind(b"PK\x05\x06")
    count, size, offset = struct.unpack_from("<HII", data, end_at + 10)
    entries, position = [], offset
    while position < offset + size:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        length = 46 + name_length + extra_length + comment_length
        entries.append(data[position:position + length])
        position += length
    kept = b"".join(entries[-keep:]) if keep else b""
    end = data[end_at:end_at + 8] + struct.pack("<HHII", keep, keep, len(kept), offset) + data[end_at + 20:]
    return data[:offset] + kept + end


def test_a_member_only_local_headers_list_is_scanned_too():
    data = _drop_central_entries(make_zip({"payload.exe": EICAR, "readme.txt": b"read me"}), keep=1)
    assert zipfile.ZipFile(__import__("io").BytesIO(data)).namelist() == ["readme.txt"]
    got = children(data, path="2/x.zip")
    assert [(c.path, c.data) for c in got] == [("2/x.zip/readme.txt", b"read me"), ("2/x.zip/payload.exe", EICAR)]


def test_a_zip_without_central_directory_still_gives_its_members():
    import io

    stream = io.BytesIO()

    class Unseekable(io.RawIOBase):  # zipfile writes data descriptors (flag bit 3) to these
        def writable(self):
            return True

        def write(self, b):
            return stream.write(b)

    with zipfile.ZipFile(Unseekable(), "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("eicar.com", EICAR)
    data = stream.getvalue()
    data = data[:data.find(b"PK\x01\x02")]  # cut the central directory off
    with pytest.raises(ExpansionIncomplete) as caught:
        children(data)
    assert caught.value.reason is Reason.CORRUPT
    assert [c.data for c in caught.value.children] == [EICAR]


def test_local_name_different_from_central_name_is_kept():
    data = bytearray(make_zip({"readme.txt": EICAR}, zipfile.ZIP_STORED))
    data[30:40] = b"evil.js.js"  # the local header's copy of the 10-character name
    (child,) = children(bytes(data))
    assert child.names == ("readme.txt", "evil.js.js")


def test_bytes_that_only_look_like_a_local_header_are_ignored():
    data = make_zip({"a.txt": b"x"}, zipfile.ZIP_STORED)
    end_at = data.rfind(b"PK\x05\x06")
    # a deflate "member" whose data is not deflate (block type 3 is reserved, RFC 1951 §3.2.3)
    junk = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, 16, 100, 5, 0) + b"bogus" + b"\xff" * 16
    comment = data[:end_at + 20] + struct.pack("<H", len(junk)) + junk
    assert [c.data for c in children(comment)] == [b"x"]


def test_tar_and_compressed_streams():
    assert [c.data for c in children(make_tar({"eicar.com": EICAR}))] == [EICAR]
    assert [(c.names, c.data) for c in children(gz(EICAR, "eicar.com"))] == [(("eicar.com",), EICAR)]
    assert [(c.names, c.data) for c in children(bz(EICAR), name="eicar.com.bz2")] == [(("eicar.com",), EICAR)]
    assert [(c.names, c.data) for c in children(xz(EICAR), name="x.txz")] == [(("x.tar",), EICAR)]


@pytest.mark.parametrize("mszip", [True, False])
def test_cab(mszip):
    text = b"".join(b"line %d of a long text file\n" % n for n in range(5000))  # several 32 KiB blocks
    got = children(make_cab({"docs\\eicar.com": EICAR, "big.txt": text}, mszip=mszip), path="2/x.cab")
    assert [(c.path, c.data) for c in got] == [("2/x.cab/docs/eicar.com", EICAR), ("2/x.cab/big.txt", text)]


def test_cab_lzx_is_unsupported_and_bombs_are_limited():
    data = bytearray(make_cab({"a.exe": b"MZ" * 10}))
    struct.pack_into("<H", data, 36 + 6, 3)  # the folder says LZX
    with pytest.raises(ScanIncomplete) as caught:
        children(bytes(data))
    assert caught.value.reason is Reason.UNSUPPORTED
    with pytest.raises(ScanIncomplete) as caught:
        children(make_cab({"zeros": bytes(4 * MIB)}), Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT


def szdd(packed: bytes, size: int, missing: bytes = b"e") -> bytes:
    return b"SZDD\x88\xf0\x27\x33A" + missing + struct.pack("<I", size) + packed


def test_szdd_literals_and_window_matches():
    literals = b"".join(b"\xff" + EICAR[k:k + 8] for k in range(0, len(EICAR), 8))
    (child,) = children(szdd(literals, len(EICAR), missing=b"M"), name="EICAR.CO_")
    assert (child.names, child.data) == (("EICAR.COM",), EICAR)
    # flag bit 0 clear: a match of 3 bytes from the space-filled window, then one literal
    (child,) = children(szdd(b"\x02\x00\x00X", 4))
    assert child.data == b"   X"


def test_szdd_truncated_or_too_big():
    with pytest.raises(ScanIncomplete) as caught:
        children(szdd(b"\xffabc", 100))
    assert caught.value.reason is Reason.CORRUPT
    with pytest.raises(ScanIncomplete) as caught:
        children(szdd(b"\xffabc", 10 * MIB), Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT


def test_self_extracting_zip():
    (child,) = children(pe_stub() + make_zip({"eicar.com": EICAR}), path="2/setup.exe")
    assert (child.path, child.data) == ("2/setup.exe/eicar.com", EICAR)


@pytest.mark.parametrize("archive,kind", [
    (lambda: make_cab({"eicar.com": EICAR}), "cab"),
    (lambda: make_ole([("\x01Ole10Native", 2)], {"\x01Ole10Native": ole_package("e.com", EICAR)}), "ole2"),
    (lambda: make_7z({"eicar.com": EICAR}), "7z"),
])
def test_archives_inside_programs(archive, kind):
    if kind == "7z":
        pytest.importorskip("py7zr")
    program = pe_stub(4096) + archive() + b"\x00" * 100
    seen, problems = walk(obj(program, path="2", name="setup.exe"))
    assert not problems
    assert [path for path, data in seen.items() if data == EICAR][0].startswith(f"2/embedded-4096.{kind}/")


def test_a_program_that_merely_contains_archive_magic_is_not_a_broken_archive():
    program = pe_stub() + b"MSCF\x00\x00\x00\x00" + bytes(40) + b"7z\xbc\xaf\x27\x1c" + bytes(40) \
        + b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600) + b"PK\x03\x04" + bytes(60) + b"PK\x05\x06" + bytes(18)
    assert children(program) == []


def test_iso9660():
    got = children(make_iso({"setup.exe": EICAR, "docs/readme.txt": b"read me"}), path="2/x.iso")
    assert sorted((c.path, c.data) for c in got) == [("2/x.iso/DOCS/README.TXT", b"read me"),
                                                     ("2/x.iso/SETUP.EXE", EICAR)]


@pytest.mark.peer
def test_iso_made_by_genisoimage_with_joliet_names_and_hidden_files(tmp_path):
    program = require("genisoimage")
    folder = tmp_path / "content"
    (folder / "Invoices 2025").mkdir(parents=True)
    (folder / "Invoices 2025" / "invoice.pdf.lnk").write_bytes(EICAR)
    (folder / "hidden.dll").write_bytes(b"MZ hidden")
    (folder / "big.bin").write_bytes(bytes(range(256)) * 40)
    image = tmp_path / "x.iso"
    subprocess.run([program, "-quiet", "-J", "-hidden", "hidden.dll", "-o", str(image), str(folder)], check=True)
    got = {c.path: c.data for c in children(image.read_bytes(), path="2/x.iso")}
    assert got == {"2/x.iso/Invoices 2025/invoice.pdf.lnk": EICAR, "2/x.iso/hidden.dll": b"MZ hidden",
                   "2/x.iso/big.bin": bytes(range(256)) * 40}


@pytest.mark.parametrize("fmt", ["newc", "odc", "bin"])
def test_cpio(tmp_path, fmt):
    got = children(make_cpio({"dir/eicar.com": EICAR, "b.txt": b"bee"}, fmt), path="2/x.cpio")
    assert [(c.path, c.data) for c in got] == [("2/x.cpio/dir/eicar.com", EICAR), ("2/x.cpio/b.txt", b"bee")]


def test_binary_that_only_starts_like_old_cpio_is_not_one():
    assert kind_of(b"\xc7\x71" + bytes(range(200)), Policy()) is None


def test_lzma_alone_is_opened_by_content_whatever_its_name():
    """The legacy .lzma format has no magic number: found by its header and a trial decoding."""
    for data in (lzma_alone(EICAR), lzma_alone(EICAR, dict_size=3 << 20, lc=0, lp=2, pb=0)):
        assert kind_of(data, Policy()) == "lzma"
        assert [(c.path, c.data) for c in children(data, path="2/notes.txt", name="notes.txt")] == [
            ("2/notes.txt/data", EICAR)]
    assert [c.names for c in children(lzma_alone(EICAR), name="eicar.com.lzma")] == [("eicar.com",)]


def test_lzma_alone_with_a_dictionary_size_only_unlzma_accepts_is_opened_when_so_named():
    data = bytearray(lzma_alone(EICAR))
    data[1:5] = struct.pack("<I", (1 << 16) + 1)  # xz's detection refuses it; unlzma and 7-Zip do not
    assert kind_of(bytes(data), Policy()) is None
    assert [(c.names, c.data) for c in children(bytes(data), name="eicar.com.lzma")] == [(("eicar.com",), EICAR)]
    assert expand(obj(bytes(data), name="notes.txt"), Budget.for_message(Policy()), Policy()) is None
    elf = b"\x7fELF\x02\x01\x01" + bytes(9) + bytes(range(256)) * 4  # a header that would otherwise pass
    with pytest.raises(ExpansionIncomplete) as caught:  # not decoded as LZMA, and not passed as clean
        children(elf, name="x.lzma")
    assert (caught.value.reason, caught.value.children) == (Reason.CORRUPT, [])


def _unopened(data: bytes, name: str) -> Reason:
    with pytest.raises(ExpansionIncomplete) as caught:
        children(data, path="2/" + name, name=name)
    assert (caught.value.part, caught.value.children) == ("2/" + name, [])
    return caught.value.reason


def test_a_file_named_lzma_that_liblzma_cannot_decode_is_unscanned_never_clean():
    damaged = bytearray(lzma_alone(EICAR * 20))
    damaged[13:40] = b"\xff" * 27  # the range coder's first byte is no longer 0
    assert expand(obj(bytes(damaged), name="notes.txt"), Budget.for_message(Policy()), Policy()) is None
    for name in ("bad.lzma", "BAD.TLZ"):
        assert _unopened(bytes(damaged), name) is Reason.CORRUPT
    # The LZMA SDK and 7-Zip allow lc up to 8; liblzma stops at lc + lp = 4.
    lc8 = struct.pack("<BIQ", 2 * 45 + 8, 1 << 16, len(EICAR)) + bytes(1) + bytes(range(1, 64))
    assert _unopened(lc8, "x.lzma") is Reason.UNSUPPORTED
    assert _unopened(b"", "empty.lzma") is Reason.CORRUPT


@pytest.mark.parametrize("name, data", [
    ("a.gz", b"\x1f\x8b\x09" + bytes(20)),             # a method gzip does not know
    ("a.tgz", b"garbage"),
    ("a.bz2", b"BZh9" + bytes(20)),                    # no block magic
    ("a.xz", b"\xfd7zXY\x00" + bytes(20)),
    ("a.lz", b"LZIP\x02" + bytes(20)),                  # a version lzip does not know
    ("a.zst", b"\x28\xb5\x2f\xfe" + bytes(20)),
    ("a.tar.Z", b"\x1f\x9d"),                          # too short to be recognised by its bytes
    ("a.lz4", b"\x04\x22\x4d"),
    ("a.lzo", b"\x89LZO"),
])
def test_a_file_named_as_compressed_that_cannot_be_opened_is_unscanned(name, data):
    assert expand(obj(data, name="a.bin"), Budget.for_message(Policy()), Policy()) is None
    assert _unopened(data, name) is Reason.CORRUPT
    policy = Policy(archives=False)  # archives not looked into: nothing to report
    assert expand(obj(data, name=name), Budget.for_message(policy), policy) is None


def test_lzma_alone_with_the_size_in_its_header_and_no_end_marker():
    import lzma

    packed = lzma.compress(EICAR, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16}])
    # 7-Zip's LzmaUtil writes the size and, with it known, may leave the end marker out; liblzma's
    # raw encoder always writes one, which a decoder given the size then does not need to read.
    data = struct.pack("<BIQ", 0x5D, 1 << 16, len(EICAR)) + packed
    assert [c.data for c in children(data)] == [EICAR]


@pytest.mark.parametrize("data", [
    bytes(64),                                                        # zeros: dictionary size 0
    b"\x5d" + bytes(30),                                             # the same
    struct.pack("<BIQ", 0x5D, 1 << 16, 1 << 40) + bytes(30),           # a size liblzma calls "not LZMA"
    struct.pack("<BIQ", 0x5D, 3 << 16 | 1, 2**64 - 1) + bytes(30),     # no dictionary size xz writes
    struct.pack("<BIQ", 0xE1, 1 << 16, 2**64 - 1) + bytes(30),         # properties past 224
    struct.pack("<BIQ", 0x5D, 1 << 16, 2**64 - 1) + b"\x01" + bytes(30),  # the range coder starts with 0
    struct.pack("<BIQ", 0x5D, 1 << 16, 2**64 - 1) + b"\x00\xff" * 40,  # a header, then what decodes to nothing
])
def test_data_that_only_looks_like_an_lzma_header_is_no_container(data):
    assert kind_of(data, Policy()) is None


def test_lzma_alone_bombs_and_damage_are_unscanned_never_clean():
    bomb = lzma_alone(bytes(8 * MIB))
    with pytest.raises(ScanIncomplete) as caught:
        children(bomb, Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT
    with pytest.raises(ScanIncomplete) as caught:
        children(lzma_alone(EICAR * 50)[:-8])  # the end marker cut off
    assert caught.value.reason is Reason.CORRUPT
    huge_dictionary = bytearray(lzma_alone(b"x"))
    huge_dictionary[1:5] = struct.pack("<I", 1 << 30)
    with pytest.raises(ScanIncomplete) as caught:
        children(bytes(huge_dictionary), Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT


def test_lzip_members_are_all_opened():
    assert kind_of(lzip(EICAR), Policy()) == "lzip"
    assert [(c.names, c.data) for c in children(lzip(EICAR), name="eicar.com.lz")] == [(("eicar.com",), EICAR)]
    assert children(lzip(b"first ") + lzip(b"second", 1 << 20))[0].data == b"first second"
    with pytest.raises(ScanIncomplete) as caught:
        children(lzip(bytes(8 * MIB)), Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT
    with pytest.raises(ScanIncomplete) as caught:
        children(lzip(EICAR)[:-30])
    assert caught.value.reason is Reason.CORRUPT


@pytest.mark.peer
def test_lzip_made_by_lzip_is_opened_member_by_member(tmp_path):
    big = random.Random(1).randbytes(300_000) + EICAR  # incompressible, so it takes several members
    (tmp_path / "eicar.com").write_bytes(EICAR)
    (tmp_path / "big").write_bytes(big)
    # -b: a member per 100 KiB, so one file holds several, as lzip writes long input
    subprocess.run([require("lzip"), "-k", "-9", str(tmp_path / "eicar.com")], check=True)
    subprocess.run([require("lzip"), "-k", "-0", "-b", "100KiB", str(tmp_path / "big")], check=True)
    data = (tmp_path / "eicar.com.lz").read_bytes()
    assert [(c.names, c.data) for c in children(data, name="eicar.com.lz")] == [(("eicar.com",), EICAR)]
    members = (tmp_path / "big.lz").read_bytes()
    assert members.count(b"LZIP\x01") > 1
    assert [c.data for c in children(members)] == [big]


@pytest.mark.peer
def test_lzma_made_by_xz_is_opened(tmp_path):
    (tmp_path / "eicar.com").write_bytes(EICAR)
    subprocess.run([require("xz"), "--format=lzma", "-k", str(tmp_path / "eicar.com")], check=True)
    data = (tmp_path / "eicar.com.lzma").read_bytes()
    assert [(c.names, c.data) for c in children(data, name="eicar.com.lzma")] == [(("eicar.com",), EICAR)]


def test_concatenated_streams_are_all_unpacked():
    assert children(gz(b"first ") + gz(b"second"))[0].data == b"first second"
    assert children(bz(b"one ") + bz(b"two"))[0].data == b"one two"
    assert children(xz(b"a ") + b"\x00" * 4 + xz(b"b"))[0].data == b"a b"


def test_tgz_is_two_levels():
    seen, problems = walk(obj(gz(make_tar({"x/eicar.com": EICAR})), path="1", name="payload.tgz"))
    assert not problems
    assert seen["1/payload.tar/x/eicar.com"] == EICAR


def test_nested_zip_in_zip_in_tar():
    inner = make_zip({"eicar.com": EICAR})
    middle = make_zip({"inner.zip": inner})
    outer = make_tar({"middle.zip": middle})
    seen, problems = walk(obj(outer, path="3", name="bundle.tar"))
    assert not problems
    assert seen["3/middle.zip/inner.zip/eicar.com"] == EICAR


def test_tnef_attachments_with_long_names():
    data = make_tnef([("eicar-test-file.com", EICAR), ("notes.txt", b"just text")])
    got = children(data, path="2/winmail.dat")
    assert [(c.path, c.data) for c in got] == [
        ("2/winmail.dat/eicar-test-file.com", EICAR),
        ("2/winmail.dat/notes.txt", b"just text"),
    ]


def test_tnef_without_mapi_names_uses_the_title():
    got = children(make_tnef([("eicar.com", EICAR)], long_names=False))
    assert got[0].names == ("eicar.co",)  # the 8.3 title, cut as the builder cuts it


def test_tnef_damage_is_corrupt_not_clean():
    data = make_tnef([("eicar.com", EICAR)])
    with pytest.raises(ScanIncomplete) as caught:
        children(data[:-30])
    assert caught.value.reason is Reason.CORRUPT


def test_7z():
    pytest.importorskip("py7zr")
    got = children(make_7z({"dir/eicar.com": EICAR, "b.txt": b"bee"}))
    assert sorted((c.names[0], c.data) for c in got) == [("b.txt", b"bee"), ("dir/eicar.com", EICAR)]


def test_7z_without_py7zr_is_unsupported(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_py7zr(name, *args, **kwargs):
        if name.startswith("py7zr"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_py7zr)
    with pytest.raises(ScanIncomplete) as caught:
        children(b"7z\xbc\xaf\x27\x1c" + bytes(32))
    assert caught.value.reason is Reason.UNSUPPORTED


# -- encryption: never clean --

def test_zipcrypto_member_is_encrypted_and_the_others_still_come_out():
    encrypted = zipcrypto_zip("eicar.com", EICAR, b"infected")
    # our ZipCrypto writer is real: zipfile decrypts it with the password
    assert zipfile.ZipFile(__import__("io").BytesIO(encrypted)).read("eicar.com", pwd=b"infected") == EICAR
    with pytest.raises(ExpansionIncomplete) as caught:
        children(encrypted, path="2/secret.zip")
    assert caught.value.reason is Reason.ENCRYPTED
    assert caught.value.part == "2/secret.zip/eicar.com"


def test_encrypted_and_plain_members_together():
    plain = make_zip({"eicar.com": EICAR})
    outer = make_tar({"plain.zip": plain, "secret.zip": zipcrypto_zip("x.exe", b"MZ", b"pw")})
    seen, problems = walk(obj(outer, path="2"))
    assert seen["2/plain.zip/eicar.com"] == EICAR
    assert [(p.reason, p.part) for p in problems] == [(Reason.ENCRYPTED, "2/secret.zip/x.exe")]


def test_7z_encrypted_content_and_header():
    pytest.importorskip("py7zr")
    for header_encryption in (False, True):
        data = make_7z({"eicar.com": EICAR}, password="secret", header_encryption=header_encryption)
        with pytest.raises(ScanIncomplete) as caught:
            children(data)
        assert caught.value.reason is Reason.ENCRYPTED


@pytest.mark.peer
@pytest.mark.parametrize("method", ["ZipCrypto", "AES256"])
def test_zips_encrypted_by_7z(tmp_path, method):
    seven = require("7z")
    (tmp_path / "eicar.com").write_bytes(EICAR)
    subprocess.run([seven, "a", "-tzip", "-pinfected", f"-mem={method}", str(tmp_path / "e.zip"),
                    str(tmp_path / "eicar.com")], check=True, capture_output=True)
    with pytest.raises(ExpansionIncomplete) as caught:
        children((tmp_path / "e.zip").read_bytes())
    assert caught.value.reason is Reason.ENCRYPTED


# -- limits: bombs end fast, in bounded memory, as LIMIT --

def _bounded(run, *, seconds: float, peak_bytes: int) -> ScanIncomplete:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ScanIncomplete) as caught:
            run()
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert peak < peak_bytes, f"peak {peak / MIB:.1f} MiB"
    return caught.value


def test_single_highly_compressed_member_stops_at_the_member_cap():
    policy = Policy(max_archive_file_size=8 * MIB)
    bomb = zip_with_raw_member("zeros.bin", zeros_deflated(128 * MIB), 128 * MIB)
    assert len(bomb) < 150 * 1024  # about 1000:1
    error = _bounded(lambda: expand(obj(bomb), Budget.for_message(policy), policy), seconds=2.0,
                     peak_bytes=3 * 8 * MIB)
    assert error.reason is Reason.LIMIT


def test_42_zip_style_recursive_bomb_stops_at_the_total_budget():
    policy = Policy(max_archive_file_size=16 * MIB)
    layer = make_zip({"0.bin": bytes(4 * MIB)})  # 4 MiB of zeros, about 4 KiB compressed
    for _ in range(4):  # 16**4 copies of 4 MiB: 256 GiB if anyone unpacked it all
        layer = make_zip({f"{n:x}.zip": layer for n in range(16)})
    assert len(layer) < 2 * MIB
    error = _bounded(lambda: walk_or_raise(obj(layer), policy), seconds=3.0, peak_bytes=3 * 16 * MIB)
    assert error.reason is Reason.LIMIT


def walk_or_raise(root: ScanObject, policy: Policy) -> None:
    _, problems = walk(root, policy)
    if problems:
        raise problems[0]


def test_7z_bomb_is_refused_by_its_declared_size():
    pytest.importorskip("py7zr")
    policy = Policy(max_archive_file_size=1 * MIB)
    bomb = make_7z({"zeros.bin": bytes(16 * MIB)})
    assert len(bomb) < 64 * 1024
    # The header is itself LZMA-coded: reading it allocates the dictionary the archive declares
    # (16 MiB for py7zr's default), whatever our caps; nothing else may grow.
    error = _bounded(lambda: expand(obj(bomb), Budget.for_message(policy), policy), seconds=1.0,
                     peak_bytes=16 * MIB + 3 * MIB)
    assert error.reason is Reason.LIMIT


def test_overlapping_entries_are_refused_before_inflating():
    bomb = overlapping_zip(bytes(MIB), copies=200)
    error = _bounded(lambda: children(bomb), seconds=0.5, peak_bytes=8 * MIB)
    assert error.reason is Reason.LIMIT
    assert "overlap" in error.detail


def test_nesting_limit():
    data = EICAR
    for _ in range(4):
        data = make_zip({"x.zip": data})
    _, problems = walk(obj(data), Policy(archive_nesting_level=2))
    assert [p.reason for p in problems] == [Reason.LIMIT]
    seen, problems = walk(obj(data), Policy(archive_nesting_level=4))
    assert not problems and EICAR in seen.values()


def test_too_many_members():
    data = make_zip({f"{n}.txt": b"" for n in range(10_001)}, zipfile.ZIP_STORED)
    with pytest.raises(ScanIncomplete) as caught:
        children(data)
    assert caught.value.reason is Reason.LIMIT


def test_member_larger_than_object_size_is_not_unpacked():
    policy = Policy(max_object_size=1000)
    with pytest.raises(ScanIncomplete) as caught:
        children(make_zip({"big.txt": b"a" * 5000}), policy)
    assert caught.value.reason is Reason.LIMIT


def test_sparse_tar_member_is_capped():
    # A GNU sparse member claiming 1 GiB of holes: reading it must stop at the cap.
    header = bytearray(make_tar({"sparse.bin": b"x" * 512})[:512])
    header[156:157] = b"S"  # GNU sparse type
    header[124:136] = b"%011o\x00" % (1 << 30)
    header[386:386 + 24] = b"%011o\x00%011o\x00" % (0, 512)   # one data block at offset 0
    header[483:495] = b"%011o\x00" % (1 << 30)                # real size
    header[148:156] = b"        "
    header[148:156] = b"%06o\x00 " % sum(header)
    data = bytes(header) + b"x" * 512 + bytes(1024)
    with pytest.raises(ScanIncomplete) as caught:
        children(data, Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT


# -- damage: corrupt, not clean, and never an unexpected exception --

def test_truncated_zip_member_is_corrupt():
    data = make_zip({"eicar.com": EICAR * 50})
    cut = data.find(b"PK\x01\x02")
    damaged = data[:cut - 40] + data[cut:]
    with pytest.raises(ScanIncomplete) as caught:
        children(damaged)
    assert caught.value.reason in (Reason.CORRUPT, Reason.LIMIT)


def test_truncated_gzip_is_corrupt_and_keeps_nothing_hidden():
    with pytest.raises(ScanIncomplete) as caught:
        children(gz(EICAR * 100)[:-40])
    assert caught.value.reason is Reason.CORRUPT


def test_unsupported_zip_method_is_unsupported():
    data = bytearray(make_zip({"a.bin": b"data"}, zipfile.ZIP_STORED))
    for signature in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(signature)
        offset = 8 if signature == b"PK\x03\x04" else 10
        struct.pack_into("<H", data, at + offset, 6)  # implode
    with pytest.raises(ScanIncomplete) as caught:
        children(bytes(data))
    assert caught.value.reason is Reason.UNSUPPORTED


MAGICS = [b"PK\x03\x04", b"PK\x05\x06", b"7z\xbc\xaf\x27\x1c", b"\x1f\x8b\x08", b"BZh91AY&SY",
          b"\xfd7zXZ\x00", b"\x78\x9f\x3e\x22", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"{\\rtf1{\\*\\objdata ",
          b"%PDF-1.7\n1 0 obj << /Filter /FlateDecode >> stream\n", b"MSCF\x00\x00\x00\x00", b"070701", b"070707",
          b"LZIP\x01\x10", b"\x5d\x00\x00\x01\x00" + b"\xff" * 8 + b"\x00"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_fuzz_only_documented_exceptions(magic, tail):
    policy = Policy(max_archive_file_size=MIB)
    try:
        expand(obj(magic + tail), Budget.for_message(policy), policy)
    except ScanIncomplete:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=400))
def test_fuzz_mutated_real_archives(patch, at):
    policy = Policy(max_archive_file_size=MIB)
    for base in (make_zip({"a.txt": b"hello" * 20, "b/c.txt": b"x"}), make_tar({"a": b"b" * 600}),
                 make_tnef([("a.exe", b"MZ" * 40)]),
                 make_ole([("A", 2), ("\x01Ole10Native", 2)], {"A": b"a" * 600, "\x01Ole10Native": ole_package("x", b"y")}),
                 make_ole([("VBA", 1), ("VBA/M", 2)], {"VBA/M": b"\x01p" + vba_container(MACRO)}),
                 make_rtf(ole1_object("Package", ole_package("a.exe", b"MZ" * 20)[4:])),
                 make_pdf([(b"<< /Filter [/AHx /Fl] >>", __import__("zlib").compress(b"data" * 40).hex().encode())]),
                 make_cab({"a.txt": b"hello" * 100, "b": b"x"}), make_cpio({"a": b"b" * 30}, "bin"),
                 make_iso({"a.exe": b"MZ" * 40, "d/b.txt": b"x"})):
        data = base[:at] + patch + base[at + len(patch):]
        try:
            walk(obj(data), policy)
        except ScanIncomplete:
            pass


# -- Debian's clamav-testfiles: real archives made by real tools --

@pytest.mark.peer
@pytest.mark.parametrize("name,path", [
    ("clam.zip", "clam.zip/clam.exe"),
    ("clam.bz2.zip", "clam.bz2.zip/clam.exe"),
    ("clam.d64.zip", "clam.d64.zip/clam.exe"),
    ("clam.7z", "clam.7z/clam.exe"),
    ("clam.tar.gz", "clam.tar.gz/clam.tar/clam.exe"),
    ("clam.exe.bz2", "clam.exe.bz2/clam.exe"),
    ("clam.tnef", "clam.tnef/clam.exe"),
    ("clam.ole.doc", "clam.ole.doc/ObjectPool/_1279313719/[1]Ole10Native/Clam.exe"),
    ("clam.exe.rtf", "clam.exe.rtf/object-1/Clam.exe"),
    ("clam.pdf", "clam.pdf/clam.exe"),
    ("clam.cab", "clam.cab/clam.exe"),
    ("clam.exe.szdd", "clam.exe.szdd/data"),
    ("clam.ppt", "clam.ppt/PowerPoint Document/ole-object-1/[1]Ole10Native/clam.exe"),
    ("clam.newc.cpio", "clam.newc.cpio/clam.exe"),
    ("clam.odc.cpio", "clam.odc.cpio/clam.exe"),
    ("clam.bin-le.cpio", "clam.bin-le.cpio/clam.exe"),
    ("clam.bin-be.cpio", "clam.bin-be.cpio/clam.exe"),
])
def test_clamav_testfiles(name, path):
    folder = Path(require_clamav_testfiles())
    if name == "clam.7z":
        pytest.importorskip("py7zr")
    if name == "clam.d64.zip":
        pytest.importorskip("inflate64")
    seen, problems = walk(ScanObject((folder / name).read_bytes(), name, (name,)))
    assert not problems
    assert seen[path] == (folder / "clam.exe").read_bytes()


def test_ole2_streams_and_packaged_files():
    data = make_ole([("WordDocument", 2), ("\x01Ole10Native", 2)],
                    {"WordDocument": b"document text " * 100, "\x01Ole10Native": ole_package("invoice.pdf.exe", EICAR)})
    got = children(data, Policy(archives=False), path="2/report.doc")  # OLE2 is looked into whatever archives says
    assert [(c.path, c.names, c.data) for c in got] == [
        ("2/report.doc/WordDocument", ("WordDocument",), b"document text " * 100),
        ("2/report.doc/[1]Ole10Native", ("[1]Ole10Native",), ole_package("invoice.pdf.exe", EICAR)),
        ("2/report.doc/[1]Ole10Native/invoice.pdf.exe", ("[1]Ole10Native/invoice.pdf.exe",), EICAR),
    ]


@pytest.mark.parametrize("name_stream,encoded", [
    ("__substg1.0_3707001F", "invoice.pdf.js\x00".encode("utf-16-le")),   # long name, Unicode
    ("__substg1.0_3704001E", b"invoice.pdf.js\x00"),                       # 8.3 name, ANSI
])
def test_outlook_msg_attachments_are_named_by_their_file_names(name_stream, encoded):
    storage = "__attach_version1.0_#00000000"
    data = make_ole([("__substg1.0_0037001F", 2), (storage, 1), (f"{storage}/{name_stream}", 2),
                     (f"{storage}/__substg1.0_37010102", 2)],
                    {"__substg1.0_0037001F": "Subject".encode("utf-16-le"), f"{storage}/{name_stream}": encoded,
                     f"{storage}/__substg1.0_37010102": EICAR})
    got = [c for c in children(data, path="2/mail.msg") if c.data == EICAR]
    assert [(c.path, c.names) for c in got] == [(f"2/mail.msg/{storage}/invoice.pdf.js", ("invoice.pdf.js",))]


@pytest.mark.parametrize("obfuscate", [False, True])
def test_rtf_package_object(obfuscate):
    package = ole_package("invoice.pdf.exe", EICAR)
    data = make_rtf(ole1_object("Package", package[4:]), obfuscate=obfuscate)  # native data = package body
    got = children(data, path="2/letter.rtf")
    assert [(c.path, c.names) for c in got] == [
        ("2/letter.rtf/object-1", ("object-1",)),
        ("2/letter.rtf/object-1/invoice.pdf.exe", ("object-1/invoice.pdf.exe",)),
    ]
    assert got[1].data == EICAR


def test_rtf_object_holding_an_ole2_document_is_expanded_again():
    document = make_ole([("\x01Ole10Native", 2)], {"\x01Ole10Native": ole_package("e.com", EICAR)})
    data = make_rtf(ole1_object("Word.Document.8", document))
    seen, problems = walk(obj(data, path="2", name="x.rtf"))
    assert not problems
    assert seen["2/object-1/Word.Document.8/[1]Ole10Native/e.com"] == EICAR


def test_rtf_without_objects_has_no_children():
    assert children(make_rtf()) == []


def test_pdf_streams_are_decoded_and_embedded_files_named():
    import base64
    import zlib

    page = b"BT /F1 12 Tf (Hello) Tj ET"
    data = make_pdf([
        (b"<< /Type /Catalog /Names << /EmbeddedFiles << /Names [(a) 2 0 R] >> >> >>", None),
        (b"<< /Type /Filespec /F (invoice.pdf.exe) /EF << /F 3 0 R >> >>", None),
        (b"<< /Type /EmbeddedFile /Filter [/AHx /Fl] >>", zlib.compress(EICAR).hex().encode() + b">"),
        (b"<< /Length 99 /Filter /FlateDecode >>", zlib.compress(page)),
        (b"<< /Filter /ASCII85Decode >>", b"<~" + base64.a85encode(b"JavaScript: app.alert(1)") + b"~>"),
        (b"<< /Filter /RunLengthDecode >>", bytes([2]) + b"abc" + bytes([253]) + b"z" + bytes([128])),
        (b"<< /Subtype /Image /Filter /DCTDecode >>", b"\xff\xd8\xff jpeg bytes"),
    ], prefix=b"junk before the header, as Acrobat allows\n")
    got = {c.path: (c.names, c.data) for c in children(data, Policy(archives=False), path="2/doc.pdf")}
    assert got == {
        "2/doc.pdf/invoice.pdf.exe": (("invoice.pdf.exe",), EICAR),
        "2/doc.pdf/stream-4": ((), page),
        "2/doc.pdf/stream-5": ((), b"JavaScript: app.alert(1)"),
        "2/doc.pdf/stream-6": ((), b"abczzzz"),
    }


def test_pdf_bomb_and_encryption():
    import zlib

    bomb = make_pdf([(b"<< /Filter /FlateDecode >>", zlib.compress(bytes(8 * MIB), 9))])
    with pytest.raises(ScanIncomplete) as caught:
        children(bomb, Policy(max_archive_file_size=MIB))
    assert caught.value.reason is Reason.LIMIT
    encrypted = make_pdf([(b"<< /Filter /FlateDecode >>", b"\x8a\x11 ciphertext")], trailer=b"/Encrypt 9 0 R ")
    with pytest.raises(ScanIncomplete) as caught:
        children(encrypted)
    assert caught.value.reason is Reason.ENCRYPTED


def test_prose_about_pdfs_is_not_an_encrypted_pdf():
    prose = b"A PDF starts with %PDF-1.7 and may say /Encrypt 5 0 R in its trailer; 1 0 obj is an object."
    assert children(prose) == []  # looked into (Acrobat would open it), found empty, and not "encrypted"


def test_encryption_in_a_cross_reference_stream():
    data = make_pdf([(b"<< /Type /XRef /Size 3 /Encrypt 2 0 R /Filter /FlateDecode >>", b"x")])
    with pytest.raises(ScanIncomplete) as caught:
        children(data)
    assert caught.value.reason is Reason.ENCRYPTED


def test_polyglot_zip_and_pdf_is_unpacked_as_both():
    import zlib

    pdf_part = make_pdf([(b"<< /Filter /FlateDecode >>", zlib.compress(EICAR))])
    polyglot = make_zip({"cover.pdf": pdf_part}, zipfile.ZIP_STORED)  # "%PDF-" at byte 39: Acrobat opens it
    got = {c.path: c.data for c in children(polyglot, path="2/x.zip")}
    assert got == {"2/x.zip/cover.pdf": pdf_part, "2/x.zip/stream-1": EICAR}


MACRO = b'Attribute VB_Name = "Module1"\r\nSub AutoOpen()\r\n    Shell("powershell -enc AAAA")\r\nEnd Sub\r\n'


def test_password_protected_office_document_is_encrypted():
    data = make_ole([("EncryptionInfo", 2), ("EncryptedPackage", 2)],
                    {"EncryptionInfo": b"\x04\x00\x04\x00" + bytes(60), "EncryptedPackage": bytes(600)})
    with pytest.raises(ExpansionIncomplete) as caught:
        children(data, path="2/budget.xlsx")
    assert (caught.value.reason, caught.value.part) == (Reason.ENCRYPTED, "2/budget.xlsx/EncryptedPackage")
    assert {c.path for c in caught.value.children} == {"2/budget.xlsx/EncryptionInfo", "2/budget.xlsx/EncryptedPackage"}


def test_object_embedded_in_a_powerpoint_slide():
    import zlib

    embedded = make_ole([("\x01Ole10Native", 2)], {"\x01Ole10Native": ole_package("run.exe", EICAR)})
    compressed = struct.pack("<I", len(embedded)) + zlib.compress(embedded)
    records = (struct.pack("<HHI", 0x000F, 0x03E8, 4) + b"docu"                        # some other record
               + struct.pack("<HHI", 0x0010, 0x1011, len(compressed)) + compressed      # ExOleObjStg, zlib
               + struct.pack("<HHI", 0x0000, 0x1011, len(embedded)) + embedded)         # ExOleObjStg, stored
    data = make_ole([("PowerPoint Document", 2)], {"PowerPoint Document": records})
    seen, problems = walk(obj(data, path="2", name="deck.ppt"))
    assert not problems
    assert seen["2/PowerPoint Document/ole-object-1/[1]Ole10Native/run.exe"] == EICAR
    assert seen["2/PowerPoint Document/ole-object-2/[1]Ole10Native/run.exe"] == EICAR


def test_vba_module_source_is_decompressed():
    pcode = bytes(range(256)) * 3  # compiled code before the source, with stray 0x01 bytes in it
    data = make_ole([("Macros", 1), ("Macros/VBA", 1), ("Macros/VBA/dir", 2), ("Macros/VBA/Module1", 2),
                     ("Macros/VBA/_VBA_PROJECT", 2)],
                    {"Macros/VBA/Module1": pcode + vba_container(MACRO * 60), "Macros/VBA/dir": vba_container(b"x"),
                     "Macros/VBA/_VBA_PROJECT": b"\xcc\x61"})
    got = {c.path: c.data for c in children(data, path="2/doc.doc")}
    assert got["2/doc.doc/Macros/VBA/Module1/vba-source"] == MACRO * 60
    assert not any(path.endswith("dir/vba-source") for path in got)


def test_vba_decompression_matches_the_specification_examples():
    # [MS-OVBA] 3.2.2 and 3.2.3: a literal-only and a copy-token container
    assert vba.decompress(bytes.fromhex("0119b00061626364656667680069" "6a6b6c6d6e6f700071727374757" "62e"), 100) \
        == (b"abcdefghijklmnopqrstuv.", True)
    compressed = bytes.fromhex("012fb000236161616263646582660070616768696a013808616b6c00306d6e6f7006710270"
                               "0410727374757610777879 7a003c".replace(" ", ""))
    assert vba.decompress(compressed, 100) == (b"#aaabcdefaaaaghijaaaaaklaaamnopqaaaaaaaaaaaarstuvwxyzaaa", True)
    with pytest.raises(ValueError):
        vba.decompress(b"\x01\x05\x00abc", 100)  # bad chunk signature


def test_vba_source_over_the_cap_is_limit():
    with pytest.raises(ScanIncomplete) as caught:
        vba.module_source(vba_container(MACRO * 100), cap=1000)
    assert caught.value.reason is Reason.LIMIT


def test_ole2_damage_is_corrupt_or_limit_never_a_crash():
    data = make_ole([("Big", 2)], {"Big": bytes(5000)})
    with pytest.raises(ScanIncomplete) as caught:
        children(data, Policy(max_archive_file_size=1000))
    assert caught.value.reason is Reason.LIMIT
    with pytest.raises(ScanIncomplete) as caught:
        children(data[:1500])  # the stream's sectors are cut off
    assert caught.value.reason is Reason.CORRUPT
    with pytest.raises(ScanIncomplete) as caught:
        children(data[:520])  # not even a directory
    assert caught.value.reason is Reason.CORRUPT


# -- cheap recognition: every fast path against the plain reading it stands for --

# Magic bytes at their offsets (every kind, every unsupported format), for buffers that are
# one byte flip away from a container as well as containers and plain noise.
_MARKS = [(0, magic) for magic in MAGICS] + [
    (0, b"MZ"), (0, b"SZDD\x88\xf0\x27\x33A"), (0, b"\xc7\x71"), (0, b"\x71\xc7"), (0, b"070702"),
    (0, b"Rar!\x1a\x07\x00"), (0, b"Rar!\x1a\x07\x01\x00"), (0, b"\x60\xea\x10\x00"), (7, b"**ACE**"),
    (2, b"-lh5-"), (0, b"ITSF\x03\x00\x00\x00"), (20, b"\xdc\xa7\xc4\xfd"), (0, b"SIT!"), (0, b"StuffIt "),
    (32769, b"BEA01"), (32769, b"CD001"), (0, b"MSWIM\x00\x00\x00"), (0, b"conectix"), (0, b"vhdxfile"),
    (510, b"\x55\xaa"), (54, b"FAT12"), (82, b"FAT32"), (0, b"\x28\xb5\x2f\xfd"), (0, b"\x04\x22\x4d\x18"),
    (0, b"\x02\x21\x4c\x18"), (0, b"\x5a\x2a\x4d\x18"), (0, b"\x1f\x9d\x90"), (0, b"\x1f\x1e"),
    (0, b"\x89LZO\x00\r\n\x1a\n"), (0, b"LZIP\x01\x10"), (0, b"\x5d\x00\x00\x01\x00" + b"\xff" * 8 + b"\x00"),
    (0, b"\x5d\x00\x00\x01\x00\x20" + bytes(7) + b"\x00\x2a"),
    (257, b"ustar"), (0, b"%PDF-1"), (700, b"%PDF-2"), (1018, b"%PDF-3"), (1019, b"%PDF-4"), (3, b"%PDF-x"),
]


@st.composite
def marked_buffers(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.binary(max_size=600)))
    for at, mark in draw(st.lists(st.sampled_from(_MARKS), max_size=3)):
        if at > 2048:
            data.extend(bytes(max(0, at - len(data))))  # the ISO/UDF descriptors sit at 32 KiB
        data[at:at + len(mark)] = mark
    for _ in range(draw(st.integers(0, 2))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _v7_tar_header_then(data: bytes) -> bool:
    """tar.recognise as first written: the header block copied and summed as a whole."""
    header = data[:512]
    if len(data) < 512:
        return False
    if data[257:262] == b"ustar":
        return True
    if header[0] == 0:
        return False
    field = header[148:156].rstrip(b"\x00 ")
    if not field or any(c not in b"01234567" for c in field.lstrip(b" ")):
        return False
    return int(field.lstrip(b" "), 8) == sum(header[:148]) + 8 * 0x20 + sum(header[156:])


def _with_v7_checksum(data: bytes) -> bytes:
    """``data`` padded to a block, with a valid v7 tar checksum."""
    header = bytearray(data.ljust(512, b"\x00"))
    header[0] = header[0] or 0x61
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\x00" % sum(header[:512])
    return bytes(header)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(marked_buffers() | marked_buffers().map(_with_v7_checksum), st.booleans())
def test_first_byte_table_finds_what_every_test_finds(data, archives):
    import re

    from mailguard.scan import containers
    from mailguard.scan.containers import pdf, tar

    policy = Policy(archives=archives)
    every = [kind for kind in containers._KINDS if (archives or not kind.is_archive) and kind.recognise(data)]
    assert containers._find(data, policy) == every
    assert unsupported.recognise(data) == (unsupported.format_of(data) is not None)
    assert pdf.recognise(data) == (re.compile(rb"%PDF-\d").search(data, 0, 1024) is not None)
    assert tar.recognise(data) == _v7_tar_header_then(data)


def test_every_kind_with_first_bytes_names_its_magic():
    from mailguard.scan import containers

    samples = {"tnef": b"\x78\x9f\x3e\x22", "ole2": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
               "rtf": b"{\\rtf1", "zip": b"PK\x05\x06", "7z": b"7z\xbc\xaf\x27\x1c", "gzip": b"\x1f\x8b\x08",
               "bzip2": b"BZh91AY&SY", "xz": b"\xfd7zXZ\x00", "cpio": b"070707", "cab": b"MSCF" + bytes(60),
               "szdd": b"SZDD\x88\xf0\x27\x33A" + bytes(20), "self-extractor": pe_stub(),
               "lzip": lzip(b"x"), "lzma": lzma_alone(b"x")}
    for kind in containers._KINDS:
        if kind.first_bytes is not None:
            assert kind.recognise(samples[kind.name]), kind.name
            assert samples[kind.name][0] in kind.first_bytes, kind.name


_PDF_TOKENS = [b"1 0 obj\n", b"2 0 obj <<", b"stream\r\n", b"stream\n", b"endstream", b"endobj\n", b"/Filter /FlateDecode",
               b"/Filter [/AHx]", b"/EF << /F 2 0 R >> /F (a.exe)", b"trailer\n<< /Encrypt 5 0 R >>", b"/Encrypt",
               b"/Type /XRef", b"<414243>", b"x\x9c\x03\x00\x00\x00\x00\x01", b" ", b"\n"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PDF_TOKENS) | st.binary(max_size=12), max_size=14))
def test_pdf_marker_check_gives_what_the_object_walk_gives(pieces):
    """Without ``stream`` and ``/Encrypt`` the walk finds nothing: the quick check agrees with it."""
    from mailguard.scan.containers import bounded, pdf

    data = b"%PDF-1.4\n" + b"".join(pieces)
    policy = Policy(max_archive_file_size=MIB)

    def outcome(unpack):
        members = bounded.Members(obj(data), Budget.for_message(policy))
        try:
            unpack(members, data, members.budget)
            return [(c.path, c.data, c.names) for c in members.result()], members._count
        except ScanIncomplete as exc:
            return exc.reason, exc.detail, members._count

    assert outcome(pdf.unpack) == outcome(pdf._unpack_objects)


def test_a_binary_whose_header_only_asks_for_a_huge_dictionary_is_no_lzma():
    # A header that passes every check, naming a 1 GiB dictionary, then bytes that do not decode:
    # tried with a small dictionary, found no LZMA, so not "unscanned" for a dictionary too large.
    data = struct.pack("<BIQ", 0x5D, 1 << 30, 2**64 - 1) + b"\x00" + bytes(range(256)) * 8
    assert kind_of(data, Policy()) is None
