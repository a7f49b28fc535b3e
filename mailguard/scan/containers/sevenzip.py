"""7z members through py7zr (the optional ``archives`` extra).

Without py7zr a 7z is reported UNSUPPORTED, never clean. Members whose declared sizes
exceed the limits are refused before anything is inflated; py7zr then decompresses into
a writer we give it (``WriterFactory``), which charges every byte to the budget and
raises as soon as a member passes the member cap, stopping py7zr mid-stream, so a 7z
bomb costs bounded time and memory too. Encrypted archives (AES-256 coders, or an
encrypted header that hides even the names) are ENCRYPTED (docs/pitfalls.md#encrypted-archives).
"""

from __future__ import annotations

import io

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

MAGIC = b"7z\xbc\xaf\x27\x1c"


def recognise(data: bytes) -> bool:
    return data[:6] == MAGIC


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    try:
        import py7zr
        import py7zr.exceptions
        import py7zr.io
    except ImportError:
        raise ScanIncomplete(Reason.UNSUPPORTED, "7z needs the 'archives' extra (py7zr)") from None

    cap = bounded.member_cap(budget)

    class _CappedWriter(py7zr.io.Py7zIO):
        def __init__(self) -> None:
            self.buffer = io.BytesIO()

        def write(self, s: bytes | bytearray) -> int:
            budget.check_time()
            if self.buffer.tell() + len(s) > cap:
                raise ScanIncomplete(Reason.LIMIT, f"member unpacks to more than {cap} bytes")
            budget.charge(len(s))
            return self.buffer.write(s)

        def read(self, size: int | None = None) -> bytes:
            return self.buffer.read(size)

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.buffer.seek(offset, whence)

        def flush(self) -> None:
            pass

        def size(self) -> int:
            return self.buffer.getbuffer().nbytes

    class _Factory(py7zr.io.WriterFactory):
        def __init__(self) -> None:
            self.products: dict[str, _CappedWriter] = {}

        def create(self, filename: str) -> py7zr.io.Py7zIO:
            self.products[filename] = _CappedWriter()
            return self.products[filename]

    # py7zr parses hostile input in pure Python and fuzzing finds it raising almost anything
    # (AssertionError, OverflowError, LZMAError...): whatever it raises means "damaged".
    failures = Exception
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
    except py7zr.exceptions.PasswordRequired:
        raise ScanIncomplete(Reason.ENCRYPTED, "7z with an encrypted header") from None
    except failures as exc:
        raise ScanIncomplete(Reason.CORRUPT, f"not a readable 7z: {exc}") from None
    with archive:
        try:
            files = [info for info in archive.list() if info.is_file]
        except failures as exc:
            raise ScanIncomplete(Reason.CORRUPT, f"damaged 7z: {exc}") from None
        for _ in files:
            members.count()
        if archive.needs_password():
            for info in files:
                members.skip(info.filename, Reason.ENCRYPTED, "password-protected 7z member")
            return
        # py7zr inflates a member in pieces as large as its declared size (up to ~128 MB), so
        # refuse by the declared sizes first: a bomb never reaches the decompressor, and a
        # header that understates a size only makes py7zr stop early (it reads no further).
        declared = [info.uncompressed or 0 for info in files]
        if any(size > cap for size in declared) or sum(declared) > budget.max_total_unpacked - budget.unpacked:
            raise ScanIncomplete(Reason.LIMIT, "7z members unpack to more than the scan limits allow")
        factory = _Factory()
        try:
            archive.extractall(factory=factory)
        except ScanIncomplete:
            raise  # our writer's limit, or the clock
        except py7zr.exceptions.UnsupportedCompressionMethodError as exc:
            raise ScanIncomplete(Reason.UNSUPPORTED, f"7z method: {exc}") from None
        except py7zr.exceptions.PasswordRequired:
            raise ScanIncomplete(Reason.ENCRYPTED, "password-protected 7z member") from None
        except failures as exc:
            raise ScanIncomplete(Reason.CORRUPT, f"damaged 7z: {exc}") from None
    # py7zr names its products by a sanitised output path; map them back to member names.
    for info in files:
        writer = _product_for(factory.products, info.filename)
        if writer is None:
            members.skip(info.filename, Reason.CORRUPT, "7z member was not extracted")
            continue
        members.add(info.filename, writer.buffer.getvalue())


def _product_for(products: dict, member_name: str):  # noqa: ANN001, ANN202 - py7zr types are imported lazily
    if member_name in products:
        return products.pop(member_name)
    for key in list(products):
        if key == member_name or key.endswith("/" + member_name):
            return products.pop(key)
    return None
