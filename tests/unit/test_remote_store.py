"""The fsspec store backend on real fsspec filesystems (local files through fsspec, memory).

The S3 server tests live in tests/integration/test_s3_store.py; this file checks the backend's
own logic: atomic writes, the local cache (LRU, manifest TTL), pickling, and that the store's
guarantees (verification before unpickling, a bad entry is a miss plus a warning) hold over it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from nbflow import NbflowWarning
from nbflow.store import Store, encode, open_store
from nbflow.store.remote import FsspecBackend, LocalCache, parse_size


@pytest.fixture(autouse=True, scope="module")
def _key_file(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("NBFLOW_KEY_FILE"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBFLOW_KEY_FILE", str(tmp_path_factory.mktemp("key") / "hmac.key"))
        yield


def file_backend(root: Path, cache: Path, **kw) -> FsspecBackend:
    return FsspecBackend(f"file://{root}", cache_dir=str(cache), **kw)


def memory_backend(cache: Path, **kw) -> FsspecBackend:
    return FsspecBackend(f"memory://nbflow-test-{uuid.uuid4().hex}", cache_dir=str(cache), **kw)


KEY = "0123456789abcdef" * 2
KEY2 = "fedcba9876543210" * 2

LOADED: list[str] = []


class Loud:
    """Records every unpickling, so a test can prove a bad entry was never unpickled."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self):
        return (_load_loud, (self.tag,))


def _load_loud(tag: str) -> Loud:
    LOADED.append(tag)
    return Loud(tag)


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_round_trip_with_out_of_band_array(tmp_path: Path, kind: str) -> None:
    backend = (
        file_backend(tmp_path / "remote", tmp_path / "cache")
        if kind == "file"
        else memory_backend(tmp_path / "cache")
    )
    store = Store(backend)
    arr = np.arange(200_000, dtype="i8")
    store.put(KEY, {"a": encode(arr), "b": encode({"x": 1})}, {"step": "s", "flow": "f"})

    # a second store with an empty cache reads everything from the remote side
    fresh = Store(
        file_backend(tmp_path / "remote", tmp_path / "cache2")
        if kind == "file"
        else FsspecBackend(backend.url, cache_dir=str(tmp_path / "cache2"))
    )
    manifest = fresh.get(KEY)
    assert manifest is not None and manifest.step == "s"
    values = fresh.load_outputs(manifest)
    assert values is not None
    np.testing.assert_array_equal(values["a"], arr)
    assert values["b"] == {"x": 1}
    assert not values["a"].flags.writeable  # memory-mapped from the local cache, read-only
    assert fresh.check().clean
    assert [m.key for m in fresh.entries()] == [KEY]


def test_blobs_are_served_from_the_local_cache(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    store = Store(file_backend(remote, tmp_path / "writer-cache"))
    arr = np.arange(100_000, dtype="f8")
    store.put(KEY, {"a": encode(arr)})

    reader = Store(file_backend(remote, tmp_path / "reader-cache"))
    manifest = reader.get(KEY)
    assert manifest is not None
    assert reader.load_outputs(manifest) is not None  # downloads the blobs once
    for blob in (remote / "blobs").rglob("*"):
        if blob.is_file():
            blob.unlink()  # the remote copies are gone ...
    values = reader.load_outputs(manifest)  # ... and the local ones still verify and load
    assert values is not None
    np.testing.assert_array_equal(values["a"], arr)


def test_tampered_manifest_is_a_miss_and_never_unpickled(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    store = Store(file_backend(remote, tmp_path / "cache"))
    store.put(KEY, {"v": encode(Loud("good"))}, {"step": "s"})
    path = next((remote / "manifests").rglob("*.json"))
    doc = json.loads(path.read_text())
    doc["manifest"]["step"] = "evil"  # the body changes, the signature does not
    path.write_text(json.dumps(doc))
    LOADED.clear()
    reader = Store(file_backend(remote, tmp_path / "cache2"))
    with pytest.warns(NbflowWarning, match="signature does not match"):
        assert reader.get(KEY) is None
    assert LOADED == []


def test_altered_cached_blob_is_a_miss_not_a_wrong_value(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    cache = tmp_path / "cache"
    store = Store(file_backend(remote, cache))
    store.put(KEY, {"v": encode(list(range(1000)))})
    cached = [p for p in (cache).rglob("*") if p.is_file() and "blobs" in p.parts]
    assert cached, "writing an entry also fills the local cache"
    for p in cached:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    reader = Store(file_backend(remote, cache))
    manifest = reader.get(KEY)
    assert manifest is not None
    with pytest.warns(NbflowWarning, match="truncated or altered"):
        assert reader.load_outputs(manifest) is None


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    backend = file_backend(remote, tmp_path / "cache")

    def chunks():
        yield b"first part"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        backend.write_atomic("blobs/ab/abcdef", chunks())
    assert not backend.exists("blobs/ab/abcdef")
    assert [p for p in remote.rglob("*") if p.is_file()] == []


def test_memory_filesystem_failed_write_leaves_nothing(tmp_path: Path) -> None:
    backend = memory_backend(tmp_path / "cache")

    def chunks():
        yield b"first part"
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        backend.write_atomic("manifests/ab/x.json", chunks())
    assert not backend.exists("manifests/ab/x.json")
    assert list(backend.walk("")) == []


def test_new_entries_from_elsewhere_are_seen_at_once_deletions_after_the_ttl(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    mine = Store(file_backend(remote, tmp_path / "cache-a", manifest_ttl=3600))
    theirs = Store(file_backend(remote, tmp_path / "cache-b"))
    assert mine.get(KEY) is None
    theirs.put(KEY, {"v": encode(1)})
    assert mine.get(KEY) is not None  # a miss always asks the remote store

    theirs.delete(KEY)
    # inside the TTL the verified local copy is still served (a valid result for the key) ...
    assert mine.get(KEY) is not None
    # ... and with no TTL the deletion is seen at once
    strict = Store(file_backend(remote, tmp_path / "cache-a", manifest_ttl=0))
    assert strict.get(KEY) is None


def test_rewritten_manifest_is_picked_up_after_the_ttl(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    reader = Store(file_backend(remote, tmp_path / "cache-r", manifest_ttl=0))
    writer = Store(file_backend(remote, tmp_path / "cache-w"))
    writer.put(KEY, {"v": encode("first")})
    m1 = reader.get(KEY)
    assert m1 is not None and reader.load_outputs(m1) == {"v": "first"}
    writer.put(KEY, {"v": encode("second")})
    m2 = reader.get(KEY)
    assert m2 is not None and reader.load_outputs(m2) == {"v": "second"}


def test_own_delete_is_seen_at_once(tmp_path: Path) -> None:
    store = Store(file_backend(tmp_path / "remote", tmp_path / "cache", manifest_ttl=3600))
    store.put(KEY, {"v": encode(1)})
    assert store.get(KEY) is not None
    store.delete(KEY)
    assert store.get(KEY) is None
    assert store.clear() == 0
    assert store.check(fix=True).entries == 0
    assert store.check().clean


def test_lru_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = LocalCache(str(tmp_path / "c"), max_size=10_000)
    cache.put("blobs/aa/old", [b"x" * 3000])
    cache.put("blobs/bb/used", [b"y" * 3000])
    cache.put("blobs/cc/new", [b"z" * 3000])
    for age, name in enumerate(["blobs/aa/old", "blobs/bb/used", "blobs/cc/new"], start=1):
        os.utime(cache.path(name), (age, age))
    assert cache.hit("blobs/bb/used") is not None  # touched: now the most recent
    cache.put("blobs/dd/newer", [b"w" * 3000])  # 12000 > 10000: evict down to 8000
    assert cache.hit("blobs/aa/old") is None
    assert cache.hit("blobs/cc/new") is None
    assert cache.hit("blobs/bb/used") is not None
    assert cache.hit("blobs/dd/newer") is not None
    assert cache.size() <= 10_000
    assert oct(os.stat(cache.root).st_mode & 0o777) == oct(0o700)
    assert oct(os.stat(cache.path("blobs/dd/newer")).st_mode & 0o777) == oct(0o600)


def test_blob_larger_than_the_cache_is_read_without_it(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    Store(file_backend(remote, tmp_path / "w", cache_size=0)).put(
        KEY, {"a": encode(np.ones(50_000))}
    )
    reader = Store(file_backend(remote, tmp_path / "r", cache_size="100K"))
    manifest = reader.get(KEY)
    assert manifest is not None
    values = reader.load_outputs(manifest)
    assert values is not None and float(values["a"].sum()) == 50_000.0
    blobs = [p for p in (tmp_path / "r").rglob("*") if p.is_file() and "blobs" in p.parts]
    assert blobs and all(p.stat().st_size < 50_000 for p in blobs)  # 400 KB does not fit


def test_backend_pickles_as_url_and_options(tmp_path: Path) -> None:
    backend = file_backend(tmp_path / "remote", tmp_path / "cache", manifest_ttl=5)
    clone = pickle.loads(pickle.dumps(backend))
    assert isinstance(clone, FsspecBackend)
    assert clone.url == backend.url and clone.manifest_ttl == 5
    assert clone.cache.root == backend.cache.root


def test_open_store_dispatches_urls(tmp_path: Path) -> None:
    store = open_store(f"memory://nbflow-{uuid.uuid4().hex}/p", cache_dir=str(tmp_path / "c"))
    assert isinstance(store.backend, FsspecBackend)
    assert store.root.startswith("memory://")
    assert not store.backend.shared
    local = open_store(f"file://{tmp_path / 'local'}")
    assert not isinstance(local.backend, FsspecBackend)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), (1024, 1024), ("500M", 500 * 1024**2), ("5G", 5 * 1024**3), ("1.5k", 1536),
     ("2GiB", 2 * 1024**3), (None, 7)],
)
def test_parse_size(text, expected) -> None:
    assert parse_size(text, 7) == expected


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size("lots", 0)


def test_an_unusable_local_cache_is_read_around(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    writer = Store(file_backend(remote, tmp_path / "w"))
    writer.put(KEY, {"a": encode(np.arange(30_000)), "b": encode("small")})

    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("a file where the cache directory should be")
    with pytest.warns(NbflowWarning, match="cannot be used"):
        backend = file_backend(remote, not_a_dir)
    reader = Store(backend)
    manifest = reader.get(KEY)
    assert manifest is not None and reader.load_outputs(manifest) is not None

    # a cache that breaks after it was set up (disk full, removed): reads and writes go on
    broken = file_backend(remote, tmp_path / "c")
    store = Store(broken)
    shutil.rmtree(broken.cache.root)
    Path(broken.cache.root).write_text("now a file")
    manifest = store.get(KEY)
    assert manifest is not None
    values = store.load_outputs(manifest)
    assert values is not None and values["b"] == "small" and int(values["a"][-1]) == 29_999
    store.put(KEY2, {"v": encode(2)})
    assert store.get(KEY2) is not None and Store(file_backend(remote, tmp_path / "d")).has(KEY2)
