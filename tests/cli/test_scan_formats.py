"""``mailguard scan`` on .eml files whose payload hides in a format that once passed as clean:
compressed single streams (LZMA-alone, lzip, zstd) and a multipart without a boundary.

Each file is made by a real tool (``xz --format=lzma``, ``lzip``, ``zstd``), and is
attached under a harmless name and type: formats are recognised by their bytes.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_scan import mailguard
from tests.peers import require
from tests.scan.archives import EICAR


def attachment_message(payload: bytes, name: str = "notes.txt", media_type: str = "text/plain") -> bytes:
    encoded = base64.encodebytes(payload)
    return (b"From: sender@example.org\r\nTo: user@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
            b"--b1\r\nContent-Type: " + media_type.encode() + b"; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded.replace(b"\n", b"\r\n") + b"--b1--\r\n")


def scan_one(tmp_path: Path, raw: bytes) -> tuple[int, dict]:
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    run = mailguard(str(path), "--format", "jsonl")
    return run.returncode, json.loads(run.stdout.decode().splitlines()[0])


def compressed_by(tmp_path: Path, *command: str) -> bytes:
    source = tmp_path / "eicar.com"
    source.write_bytes(EICAR)
    return subprocess.run([*command, "-c", str(source)], check=True, capture_output=True).stdout


@pytest.mark.peer
def test_an_lzma_alone_attachment_is_opened(tmp_path: Path):
    packed = compressed_by(tmp_path, require("xz"), "--format=lzma")
    code, result = scan_one(tmp_path, attachment_message(packed))
    assert (code, result["verdict"]) == (1, "infected"), result
    assert result["detections"][0]["part"].startswith("2/notes.txt/")


@pytest.mark.peer
def test_an_lzip_attachment_is_opened(tmp_path: Path):
    packed = compressed_by(tmp_path, require("lzip"))
    code, result = scan_one(tmp_path, attachment_message(packed, "data.bin", "application/octet-stream"))
    assert (code, result["verdict"]) == (1, "infected"), result


@pytest.mark.peer
def test_a_zstd_attachment_is_unscanned_never_clean(tmp_path: Path):
    packed = compressed_by(tmp_path, require("zstd"), "-q")
    code, result = scan_one(tmp_path, attachment_message(packed))
    assert (code, result["verdict"]) == (3, "unscanned"), result
    assert result["unscanned"][0]["reason"] == "unsupported"


def test_a_multipart_without_a_boundary_is_scanned_as_a_guessing_client_splits_it(tmp_path: Path):
    encoded = base64.encodebytes(EICAR).replace(b"\n", b"\r\n")
    raw = (b"From: sender@example.org\r\nTo: user@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
           b"--b1\r\nContent-Type: application/octet-stream; name=\"eicar.com\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b1--\r\n")
    code, result = scan_one(tmp_path, raw)
    assert (code, result["verdict"]) == (1, "infected"), result
    # --action clean removes it (the whole message is replaced: its structure is a guess)
    path = tmp_path / "message.eml"
    assert mailguard(str(path), "--action", "clean").returncode == 1
    assert encoded not in path.read_bytes()
    assert mailguard(str(path)).returncode == 0
