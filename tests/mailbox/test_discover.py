import os

import pytest

from mailguard.mailbox.discover import MboxFile, MessageFile, Problem, Skipped, Stdin, discover
from tests.mailbox.fixtures import make_maildir, mbox_bytes, message, run_as_nobody


def kinds(paths):
    out = []
    for item in discover([str(p) for p in paths]):
        if isinstance(item, MessageFile):
            out.append(("message", item.location.get("format"), os.path.relpath(item.path, item.source)
                        if item.source != item.path else os.path.basename(item.path)))
        elif isinstance(item, MboxFile):
            out.append(("mbox", os.path.basename(item.path)))
        elif isinstance(item, Problem):
            out.append(("problem", os.path.basename(item.path), item.reason))
        elif isinstance(item, Skipped):
            out.append(("skipped", os.path.basename(item.path)))
        else:
            out.append(("stdin",))
    return out


def test_formats_are_recognised_by_content_not_name(tmp_path):
    (tmp_path / "inbox.eml").write_bytes(mbox_bytes([message(1)]))   # an mbox, whatever the name
    (tmp_path / "mail.mbox").write_bytes(message(2))                # a single message
    (tmp_path / "notes.txt").write_bytes(b"Note: this is not mail\n\ntext\n")
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty").write_bytes(b"")
    assert kinds([tmp_path]) == [
        ("mbox", "empty"),
        ("problem", "garbage.bin", "not a message or mailbox (content not recognised)"),
        ("mbox", "inbox.eml"),
        ("message", "eml", "mail.mbox"),
        ("problem", "notes.txt", "not a message or mailbox (content not recognised)"),
    ]


def test_maildir_with_maildirplusplus_subfolders(tmp_path):
    root = make_maildir(tmp_path / "Maildir", {
        "cur/2:2,S": message(2), "cur/1:2,": message(1), "new/3": message(3),
        ".Archive/cur/4:2,S": message(4), "dovecot-uidlist": b"3 V1 N4\n",
    })
    (root / "cur" / ".hidden").write_bytes(b"x")
    assert kinds([root]) == [
        ("message", "maildir", "cur/1:2,"), ("message", "maildir", "cur/2:2,S"), ("message", "maildir", "new/3"),
        ("message", "maildir", ".Archive/cur/4:2,S"),
    ]
    archive = [i for i in discover([str(root)]) if isinstance(i, MessageFile)][-1]
    assert archive.location == {"format": "maildir", "folder": ".Archive", "file": "cur/4:2,S"}


def test_broken_maildir_entries_are_problems(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1": message(1)})
    (root / "cur" / "dangling").symlink_to(tmp_path / "nowhere")
    (root / "new" / "adir").mkdir()
    assert kinds([root]) == [
        ("message", "maildir", "cur/1"),
        ("problem", "dangling", "broken Maildir entry: no such file or folder"),
        ("problem", "adir", "broken Maildir entry: not a regular file"),
    ]


def test_mh_folder_in_number_order_with_subfolders(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    for number in (10, 2, 1):
        (folder / str(number)).write_bytes(message(number))
    (folder / ".mh_sequences").write_bytes(b"unseen: 10\n")
    (folder / ",3").write_bytes(message(3))  # removed message
    (folder / "sub").mkdir()
    (folder / "sub" / "1").write_bytes(message(5))
    assert kinds([folder]) == [("message", "mh", "1"), ("message", "mh", "2"), ("message", "mh", "10"),
                               ("message", "mh", "1")]


def test_symlink_loops_end_the_walk_with_a_problem(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.eml").write_bytes(message(1))
    (tmp_path / "a" / "back").symlink_to(tmp_path / "a")
    (tmp_path / "self").symlink_to(tmp_path / "self")
    found = kinds([tmp_path])
    assert ("message", "eml", "m.eml") in found
    assert ("problem", "back", "symlink loop: this folder contains itself") in found
    assert ("problem", "self", "symlink loop: too many levels of symbolic links") in found


def test_special_files_and_missing_paths(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert kinds([tmp_path / "fifo", tmp_path / "missing", "-"]) == [
        ("problem", "fifo", "not a regular file"), ("problem", "missing", "no such file or folder"), ("stdin",)]


def test_client_index_files_are_skipped_in_folders(tmp_path):
    (tmp_path / "Inbox").write_bytes(mbox_bytes([message(1)]))
    (tmp_path / "Inbox.msf").write_bytes(b"// <!-- <mdb:mork:z v=\"1.4\"/> -->\n< <(a=c)> >\n")
    assert kinds([tmp_path]) == [("mbox", "Inbox"), ("skipped", "Inbox.msf")]


def test_unreadable_files_are_problems(tmp_path_factory):
    import tempfile

    folder = tempfile.mkdtemp()  # a folder "nobody" can enter, unlike pytest's
    try:
        os.chmod(folder, 0o755)
        secret = os.path.join(folder, "secret.eml")
        with open(secret, "wb") as stream:
            stream.write(message(1))
        os.chmod(secret, 0)
        found = run_as_nobody(kinds, [folder])
        assert found == [("problem", "secret.eml", "Permission denied")]
    finally:
        import shutil

        shutil.rmtree(folder)


def test_own_folders_are_skipped_given_directly_or_met_in_a_walk(tmp_path):
    home = tmp_path / "home"
    quarantine = home / "quarantine"
    quarantine.mkdir(parents=True)
    (quarantine / "20250101-0123456789ab.eml").write_bytes(message(1))
    (tmp_path / "inbox").write_bytes(mbox_bytes([message(2)]))
    (tmp_path / "link").symlink_to(quarantine)  # real paths are compared, not names
    exclude = [str(home), str(quarantine)]
    walked = list(discover([str(tmp_path)], exclude))
    assert [(type(i).__name__, os.path.basename(i.path)) for i in walked] == [
        ("Skipped", "home"), ("MboxFile", "inbox"), ("Skipped", "link")]
    assert all(i.own and "never scanned" in i.reason for i in walked if isinstance(i, Skipped))
    for given in (quarantine, quarantine / "20250101-0123456789ab.eml", tmp_path / "link", home):
        (item,) = discover([str(given)], exclude)
        assert isinstance(item, Skipped) and item.own, given
    # without exclusions it would be scanned
    assert any(isinstance(i, MessageFile) for i in discover([str(quarantine)]))
