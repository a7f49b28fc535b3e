from __future__ import annotations

import os
import stat

import pytest

from mailguard.errors import TLSSetupError
from mailguard.tls.castore import CAStore
from mailguard.tls.leaf import LeafMinter


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_key_0600_in_private_folders(tmp_path):
    store = CAStore(tmp_path)
    stored = store.init()
    assert mode(stored.key_path) == 0o600
    assert mode(store.root) == 0o700 and mode(stored.folder) == 0o700
    assert mode(stored.cert_path) == 0o644
    assert stored.id.endswith(stored.ca.fingerprint[:8])
    assert not list(stored.folder.glob(".*.tmp"))  # no temp files left behind
    loaded = store.active()
    assert loaded.ca.fingerprint == stored.ca.fingerprint
    assert loaded.ca.key.private_numbers() == stored.ca.key.private_numbers()


def test_key_mode_is_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        stored = CAStore(tmp_path).init()
    finally:
        os.umask(old)
    assert mode(stored.key_path) == 0o600


def test_init_refuses_to_overwrite_without_force(tmp_path):
    store = CAStore(tmp_path)
    first = store.init()
    with pytest.raises(TLSSetupError, match="already exists.*--force"):
        store.init()
    second = store.init(force=True, key_type="rsa")
    assert second.ca.fingerprint != first.ca.fingerprint
    assert not first.folder.exists()  # replaced means gone, key included
    assert [s.id for s in store.all()] == [second.id]


def test_rotate_keeps_the_old_certificate_but_destroys_its_key_and_leaves(tmp_path):
    store = CAStore(tmp_path)
    old = store.init()
    LeafMinter(old.ca, old.leaves_dir).leaf_for(["imap.example.com"])
    assert old.leaves_dir.is_dir()
    retired, new = store.rotate(name_constraints=["example.com"])
    assert retired.id == old.id and new.id != old.id
    assert store.active().id == new.id
    assert old.cert_path.is_file() and not old.key_path.exists() and not old.leaves_dir.exists()
    assert {s.id for s in store.all()} == {old.id, new.id}
    assert new.ca.name_constraints == ["example.com"]
    assert new.ca.key_type == old.ca.key_type


def test_missing_ca_says_what_to_run(tmp_path):
    with pytest.raises(TLSSetupError, match="mailguard ca init"):
        CAStore(tmp_path).active()
    with pytest.raises(TLSSetupError, match="mailguard ca init"):
        CAStore(tmp_path).rotate()
    assert CAStore(tmp_path).all() == []


def test_a_key_readable_by_others_is_refused(tmp_path):
    store = CAStore(tmp_path)
    stored = store.init()
    os.chmod(stored.key_path, 0o644)
    with pytest.raises(TLSSetupError, match="chmod 600"):
        store.active()


def test_a_key_that_does_not_match_is_refused(tmp_path):
    store = CAStore(tmp_path)
    stored = store.init()
    other = CAStore(tmp_path / "other").init()
    stored.key_path.write_bytes(other.key_path.read_bytes())
    with pytest.raises(TLSSetupError, match="is not the key of"):
        store.active()


def test_active_pointing_nowhere(tmp_path):
    store = CAStore(tmp_path)
    store.init()
    (store.root / "active").write_text("../../etc\n")
    with pytest.raises(TLSSetupError, match="names a CA that is not there"):
        store.active()
