from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

from nbflow.errors import NbflowWarning
from nbflow.store import Store, encode, open_store, signing
from nbflow.store.base import INLINE_MAX, _blob_path, _manifest_path

KEY = "ab" * 16


class Marker:
    """Unpickling this writes a file: proof that a pickle was (or was not) loaded.

    ``pad`` makes its pickle larger than ``INLINE_MAX``, so it lands in a blob of its own.
    """

    def __init__(self, path: str, pad: int = INLINE_MAX) -> None:
        self.path = path
        self.pad = pad

    def __reduce__(self):  # noqa: ANN204
        return (_touch, (self.path, "x" * self.pad))


def _touch(path: str, _pad: str = "") -> str:
    Path(path).write_text("loaded")
    return path


def put(store: Store, key: str = KEY, **values: object):
    return store.put(key, {k: encode(v) for k, v in values.items()}, {"step": "s", "flow": "f", "duration": 1.5})


def test_roundtrip_and_permissions(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    m = put(store, x=[1, 2, 3], y="hello")
    assert store.get(KEY) is not None
    assert store.load(m, "x") == [1, 2, 3] and store.load(m, "y") == "hello"
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(signing.key_path()).st_mode) == 0o600
    assert not str(signing.key_path()).startswith(str(tmp_path / "s"))
    assert store.get("cd" * 16) is None


def test_large_arrays_load_by_memory_map_read_only(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    x = np.arange(1_000_000, dtype=np.float32)
    m = put(store, x=x)
    y = store.load(m, "x")
    assert np.array_equal(x, y) and y.dtype == np.float32
    assert not y.flags.writeable
    base = y
    while getattr(base, "base", None) is not None:
        base = base.base
    import mmap

    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)  # no copy


def _corrupt_cases(tmp_path: Path, store: Store, marker: str):
    m = put(store, v=Marker(marker))
    info = m.outputs["v"]
    manifest = tmp_path / "s" / _manifest_path(KEY)
    blob = tmp_path / "s" / _blob_path(info["stream"]["digest"])
    return manifest, blob


@pytest.mark.parametrize("damage", ["truncate_manifest", "truncate_blob", "flip_blob", "tamper_manifest", "foreign_key", "delete_blob"])
def test_bad_entries_are_a_miss_plus_one_warning_and_never_unpickled(tmp_path: Path, damage: str) -> None:
    marker = str(tmp_path / "marker")
    store = open_store(tmp_path / "s")
    manifest, blob = _corrupt_cases(tmp_path, store, marker)
    if damage == "truncate_manifest":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif damage == "truncate_blob":
        blob.write_bytes(blob.read_bytes()[:-3])
    elif damage == "flip_blob":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    elif damage == "tamper_manifest":
        doc = json.loads(manifest.read_text())
        doc["manifest"]["duration"] = 99
        manifest.write_text(json.dumps(doc))
    elif damage == "foreign_key":
        doc = json.loads(manifest.read_text())
        other = signing.sign(json.dumps(doc["manifest"], sort_keys=True, separators=(",", ":")).encode(), b"x" * 64)
        doc["sig"] = other
        manifest.write_text(json.dumps(doc))
    elif damage == "delete_blob":
        blob.unlink()
    fresh = open_store(tmp_path / "s")  # no in-memory memo
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = fresh.get(KEY)
        value = fresh.load_outputs(m) if m is not None else None
        again = fresh.get(KEY)
        if again is not None:
            fresh.load_outputs(again)
    assert value is None
    ours = [x for x in w if issubclass(x.category, NbflowWarning)]
    assert len(ours) == 1, [str(x.message) for x in w]
    assert "recomputed" in str(ours[0].message)
    assert not os.path.exists(marker), "a pickle from a bad entry was loaded"


def test_small_values_live_in_the_manifest_and_are_verified(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    m = put(store, small={"a": 1}, big="y" * (INLINE_MAX + 1))
    assert "inline" in m.outputs["small"]["stream"] and "inline" not in m.outputs["big"]["stream"]
    blobs = {p.name for p in (tmp_path / "s" / "blobs").rglob("*") if p.is_file()}
    assert blobs == {m.outputs["big"]["stream"]["digest"]}
    fresh = open_store(tmp_path / "s")
    assert fresh.load_outputs(fresh.get(KEY)) == {"small": {"a": 1}, "big": "y" * (INLINE_MAX + 1)}
    assert fresh.check().clean and fresh.referenced_blobs() == blobs


@pytest.mark.parametrize("damage", ["edit_inline", "resigned_inline"])
def test_a_damaged_inline_value_is_a_miss_and_never_unpickled(tmp_path: Path, damage: str) -> None:
    """Editing the inline stream breaks the signature; even a correctly signed manifest whose
    inline bytes do not match their digest (a bug, say) is refused before unpickling."""
    import base64

    marker = str(tmp_path / "marker")
    store = open_store(tmp_path / "s")
    put(store, v=Marker(marker, pad=0), w=1)
    path = tmp_path / "s" / _manifest_path(KEY)
    doc = json.loads(path.read_text())
    stream = doc["manifest"]["outputs"]["v"]["stream"]
    other = base64.b64decode(stream["inline"]).replace(b"marker", b"markeR")
    stream["inline"] = base64.b64encode(other).decode()
    if damage == "resigned_inline":
        doc["sig"] = signing.sign(json.dumps(doc["manifest"], sort_keys=True, separators=(",", ":")).encode(),
                                  signing.load_key())
    path.write_text(json.dumps(doc))
    fresh = open_store(tmp_path / "s")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = fresh.get(KEY)
        value = fresh.load_outputs(m) if m is not None else None
    assert value is None
    assert len([x for x in w if issubclass(x.category, NbflowWarning)]) == 1
    assert not os.path.exists(marker) and not os.path.exists(marker[:-1] + "R")
    assert not fresh.check().clean


def test_small_immutable_values_decode_once_and_damage_is_still_caught(tmp_path: Path) -> None:
    """A number or a string is decoded once and the same object served again (nothing can
    change it in place); a list is a fresh copy on every load. A later entry whose inline
    bytes differ from the remembered ones under the same digest is still refused."""
    import base64

    store = open_store(tmp_path / "s")
    m = put(store, n=10**30, s="text", xs=[1, 2])
    first, again = store.load_outputs(m), store.load_outputs(m)
    assert first is not None and again is not None
    assert first["n"] == 10**30 and again["n"] is first["n"] and again["s"] is first["s"]
    assert again["xs"] == [1, 2] and again["xs"] is not first["xs"]
    other = "cd" * 16
    doc = json.loads((tmp_path / "s" / _manifest_path(KEY)).read_text())["manifest"]
    doc["key"] = other
    stream = doc["outputs"]["n"]["stream"]
    stream["inline"] = base64.b64encode(base64.b64decode(stream["inline"])[:-1] + b"!").decode()
    text = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    path = tmp_path / "s" / _manifest_path(other)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"manifest":' + text + b',"sig":"' + signing.sign(text, signing.load_key()).encode()
                     + b'"}')
    damaged = store.get(other)
    assert damaged is not None  # signed: only its inline bytes are wrong
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert store.load_outputs(damaged, ["n"]) is None
    assert any(issubclass(x.category, NbflowWarning) for x in w)


def test_signature_checked_over_stored_bytes_or_canonical_form(tmp_path: Path) -> None:
    """As written, the signature covers the manifest's bytes; a reformatted but unchanged
    document still verifies (canonical form); an edit in either layout is a miss."""
    store = open_store(tmp_path / "s")
    put(store, x=[1, 2, 3])
    path = tmp_path / "s" / _manifest_path(KEY)
    raw = path.read_bytes()
    assert raw.startswith(b'{"manifest":{') and b'"duration":1.5' in raw
    path.write_text(json.dumps(json.loads(raw), indent=2))  # reformatted only
    assert open_store(tmp_path / "s").load_outputs(open_store(tmp_path / "s").get(KEY)) == {"x": [1, 2, 3]}
    path.write_bytes(raw.replace(b'"duration":1.5', b'"duration":9.5'))  # same layout, edited
    with pytest.warns(NbflowWarning, match="signature does not match"):
        assert open_store(tmp_path / "s").get(KEY) is None


@pytest.mark.parametrize("key_size", [32, 64, 65, 200])
def test_signatures_are_hmac_sha256(key_size: int) -> None:
    """Stores stay readable across versions and by any HMAC implementation: the signature
    is standard HMAC-SHA256, keys longer than a block included."""
    import hmac
    import os as _os

    key = _os.urandom(key_size)
    for data in (b"", b"{}", _os.urandom(5000)):
        assert signing.sign(data, key) == hmac.digest(key, data, "sha256").hex()
        assert signing.verify(data, hmac.digest(key, data, "sha256").hex(), key)
        assert not signing.verify(data + b" ", signing.sign(data, key), key)


def test_verified_manifests_kept_in_memory_are_bounded(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A long session makes entry after entry; the memo of verified manifests stays bounded,
    and an entry it let go of is read and verified again."""
    from nbflow.store import base

    monkeypatch.setattr(base, "_MANIFESTS_MAX", 3)
    store = open_store(tmp_path / "s")
    keys = [f"{i:02x}" * 16 for i in range(8)]
    for i, key in enumerate(keys):
        put(store, key, x=i)
        assert len(store._memo) <= 3
    for i, key in enumerate(keys):
        m = store.get(key)
        assert m is not None and store.load(m, "x") == i
        assert len(store._memo) <= 3


def test_strict_mode_raises(tmp_path: Path) -> None:
    from nbflow.store import CorruptEntry

    store = open_store(tmp_path / "s")
    put(store, x=1)
    manifest = tmp_path / "s" / _manifest_path(KEY)
    manifest.write_bytes(b"{}")
    strict = Store(store.backend, strict=True)
    with pytest.raises(CorruptEntry):
        strict.get(KEY)


def test_check_reports_and_fixes(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    put(store, x=list(range(10)))
    put(store, "cd" * 16, y="ok")
    assert store.check().clean
    # an orphan blob, a stale temp file, a bad entry
    store.backend.write_atomic(_blob_path("ef" * 16), [b"orphan"])
    (tmp_path / "s" / "blobs" / ".tmp-1-dead").write_bytes(b"partial")
    (tmp_path / "s" / _manifest_path("cd" * 16)).write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = store.check(temp_age=0)
    assert report.bad_entries == ["cd" * 16]
    assert "ef" * 16 in report.orphan_blobs
    assert any(".tmp-" in p for p in report.temp_files)
    assert not report.clean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.check(fix=True, temp_age=0)
        after = store.check(temp_age=0)
    assert after.clean and after.entries == 1
    assert store.load(store.get(KEY), "x") == list(range(10))


def test_blobs_are_shared_and_idempotent(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    big = np.ones(200_000)
    put(store, KEY, a=big)
    put(store, "cd" * 16, b=big)
    blobs = [p for p in (tmp_path / "s" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 2  # the identical pickle stream once, the shared buffer once
    assert store.check().clean


def test_gc_evicts_least_recently_used(tmp_path: Path) -> None:
    import time

    store = open_store(tmp_path / "s")
    put(store, "aa" * 16, x=np.ones(100_000))
    time.sleep(0.02)
    put(store, "bb" * 16, x=np.zeros(100_000))
    time.sleep(0.02)
    store.touch("aa" * 16)
    evicted = store.gc(max_size=900_000)
    assert evicted == ["bb" * 16]
    assert store.get("aa" * 16) is not None and store.get("bb" * 16) is None
    assert store.check().clean


def test_records_are_signed(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.put_record("runs-f", "r1", {"status": "ok"})
    assert store.get_record("runs-f", "r1") == {"status": "ok"}
    assert store.records("runs-f") == ["r1"]
    path = tmp_path / "s" / "records" / "runs-f" / "r1.json"
    doc = json.loads(path.read_text())
    doc["record"]["status"] = "forged"
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.get_record("runs-f", "r1") is None
    with pytest.raises(ValueError):
        store.put_record("../x", "r", {})


class _Later:
    """What a notebook kernel gives :meth:`Store.defer_writes`: work kept until it is idle."""

    def __init__(self) -> None:
        self.work: list = []

    def __call__(self, fn) -> None:  # noqa: ANN001
        self.work.append(fn)

    def idle(self) -> None:
        work, self.work = self.work, []
        for fn in work:
            fn()


def test_deferred_manifests_are_served_from_memory_until_written(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    later = _Later()
    store.defer_writes(later)
    big = np.arange(100_000)
    m = put(store, x=[1, 2], y=big)
    assert not (tmp_path / "s" / _manifest_path(KEY)).exists()  # the commit point waits
    assert store.pending() == [KEY] and store.get(KEY) is m
    assert store.load(m, "x") == [1, 2] and np.array_equal(store.load(m, "y"), big)
    assert open_store(tmp_path / "s").get(KEY) is None  # another process: not yet an entry
    later.idle()
    assert store.pending() == []
    other = open_store(tmp_path / "s").get(KEY)
    assert other is not None and other.digests == m.digests
    assert other.data == json.loads(json.dumps(m.data))  # what memory served is what was written


def test_deferred_manifests_are_written_before_the_store_is_walked_or_dropped(
        tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    later = _Later()
    store.defer_writes(later)
    put(store, KEY, x=np.ones(100_000))
    put(store, "cd" * 16, x=np.zeros(100_000))
    assert [m.key for m in store.entries()] == sorted([KEY, "cd" * 16])  # flushed first
    assert store.check().clean  # their blobs are no orphans
    put(store, "ef" * 16, x=3)
    store.delete("ef" * 16)  # gone before it was written: it never is
    put(store, "12" * 16, x=4)
    store.defer_writes(None)  # written at once from now on, and what waits is written now
    later.idle()
    fresh = open_store(tmp_path / "s")
    assert fresh.get("ef" * 16) is None and fresh.get("12" * 16) is not None
    put(store, "34" * 16, x=5)
    assert later.work == [] and fresh.get("34" * 16) is not None


def test_a_deferred_manifest_that_cannot_be_written_warns_and_is_forgotten(
        tmp_path: Path) -> None:
    import errno

    from nbflow.store.backend import LocalBackend

    class FullForManifests(LocalBackend):
        """A real directory whose manifest writes fail as on a full disk."""

        def write_atomic(self, path, chunks) -> None:  # noqa: ANN001
            if path.startswith("manifests/"):
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write_atomic(path, chunks)

    store = open_store(tmp_path / "s")
    put(store, "cd" * 16, x=1)  # an earlier entry
    full = Store(FullForManifests(tmp_path / "s"))
    later = _Later()
    full.defer_writes(later)
    m = full.put(KEY, {"x": encode(2)}, {"step": "fit", "flow": "f", "duration": 1.0})
    assert full.get(KEY) is m
    with pytest.warns(NbflowWarning) as caught:
        later.idle()
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "nbflow: step 'fit' ran but its outputs were not cached (OSError: [Errno 28] No space "
        "left on device); earlier cache entries are intact")
    assert full.get(KEY) is None and full.pending() == []
    assert full.get("cd" * 16) is not None and full.check().bad_entries == []
