"""The store over a real S3-compatible server (moto, on 127.0.0.1) through s3fs.

One server per module; each test uses its own bucket prefix and its own local cache directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import nbflow
from nbflow import NbflowWarning
from nbflow.backends.testing import S3Server, s3_server
from nbflow.store import Store, encode
from nbflow.store.remote import FsspecBackend

pytestmark = pytest.mark.timeout(120)

BUCKET = "nbflow-it"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("NBFLOW_KEY_FILE")
    if existing:
        yield existing
        return
    path = str(tmp_path_factory.mktemp("key") / "hmac.key")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBFLOW_KEY_FILE", path)
        yield path


@pytest.fixture(scope="module")
def s3(key_file: str) -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def url() -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def s3_store(s3: S3Server, url: str, cache: Path, **kw) -> Store:
    return nbflow.open_store(url, cache_dir=str(cache), **s3.storage_options, **kw)


def test_flow_on_s3_is_cached_for_a_new_process(s3: S3Server, url: str, tmp_path: Path,
                                                key_file: str) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import nbflow
        store = nbflow.open_store({url!r}, cache_dir=sys.argv[1],
                                  endpoint_url={s3.endpoint_url!r})
        flow = nbflow.Flow("s3demo", store=store)

        @flow.step
        def raw():
            return np.arange(100_000, dtype="f8")

        @flow.step(outputs=("total", "count"))
        def summary(raw):
            return float(raw.sum()), len(raw)

        r = flow.run()
        print(json.dumps({{"executed": r.executed, "cached": r.cached,
                           "total": r["total"], "count": r["count"]}}))
        """
    )
    path = tmp_path / "demo.py"
    path.write_text(script)
    env = {**os.environ, "NBFLOW_KEY_FILE": key_file, "PYTHONPATH": str(ROOT)}

    def run(cache: str) -> dict:
        out = subprocess.run([sys.executable, str(path), cache], env=env, capture_output=True,
                             text=True, timeout=90, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run(str(tmp_path / "cache-a"))
    assert first["executed"] == ["raw", "summary"] and first["cached"] == []
    assert first["total"] == float(np.arange(100_000).sum()) and first["count"] == 100_000
    # another process with an empty local cache: everything comes from S3
    second = run(str(tmp_path / "cache-b"))
    assert second["executed"] == [] and second["cached"] == ["raw", "summary"]
    assert second["total"] == first["total"]
    assert s3_store(s3, url, tmp_path / "check").check().clean


def test_multipart_upload_round_trip_and_abort(s3: S3Server, url: str, tmp_path: Path) -> None:
    store = s3_store(s3, url, tmp_path / "cache", cache_size=0)
    backend = store.backend
    assert isinstance(backend, FsspecBackend) and backend.object_store
    backend.single_put_max = 1024  # force the multipart path for anything larger
    arr = np.random.default_rng(0).random(800_000)  # 6.4 MB buffer: one 5+ MB part
    store.put("ab" * 16, {"a": encode(arr)})
    reader = s3_store(s3, url, tmp_path / "cache2")
    manifest = reader.get("ab" * 16)
    assert manifest is not None
    values = reader.load_outputs(manifest)
    assert values is not None
    np.testing.assert_array_equal(values["a"], arr)

    def failing() -> Iterator[bytes]:
        yield b"x" * 2048
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        backend.write_atomic("blobs/cd/cdcd", failing())
    assert not backend.exists("blobs/cd/cdcd")

    # fail after the multipart upload has sent a part: the upload is aborted, nothing appears
    backend.part_size = 5 * 1024 * 1024
    sent: list[int] = []

    def fails_after_a_part() -> Iterator[bytes]:
        yield b"y" * (6 * 1024 * 1024)
        sent.append(1)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        backend._multipart(backend._full("blobs/ef/efef"), fails_after_a_part())
    assert sent and not backend.exists("blobs/ef/efef")
    pending = backend.fs.list_multipart_uploads(BUCKET)
    assert not [u for u in pending if "efef" in u.get("Key", "")]


def test_tampered_and_foreign_entries_on_s3_are_misses(s3: S3Server, url: str,
                                                       tmp_path: Path) -> None:
    store = s3_store(s3, url, tmp_path / "cache")
    store.put("12" * 16, {"v": encode([1, 2, 3])}, {"step": "s"})
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    path = "manifests/12/" + "12" * 16 + ".json"
    doc = json.loads(backend.fs.cat_file(backend._full(path)))
    doc["manifest"]["outputs"]["v"]["size"] += 1
    backend.fs.pipe_file(backend._full(path), json.dumps(doc).encode())
    reader = s3_store(s3, url, tmp_path / "cache2")
    with pytest.warns(NbflowWarning, match="signature does not match"):
        assert reader.get("12" * 16) is None

    # a truncated blob on S3 is a miss (and the bad blob is removed)
    written = store.put("34" * 16, {"v": encode(list(range(5000)))})
    digest = written.outputs["v"]["stream"]["digest"]
    blob = next(i.path for i in reader.backend.walk("blobs") if i.path.endswith(digest))
    full = backend._full(blob)
    backend.fs.pipe_file(full, backend.fs.cat_file(full)[:-10])
    fresh = s3_store(s3, url, tmp_path / "cache3")
    manifest = fresh.get("34" * 16)
    assert manifest is not None
    with pytest.warns(NbflowWarning, match="truncated or altered"):
        assert fresh.load_outputs(manifest) is None


def test_walk_check_and_clear_on_s3(s3: S3Server, url: str, tmp_path: Path) -> None:
    store = s3_store(s3, url, tmp_path / "cache")
    for i in range(3):
        store.put(f"{i:02d}" * 16, {"v": encode(i)}, {"step": f"s{i}", "flow": "f"})
    store.put_record("runs", "r1", {"status": "ok"})
    assert store.get_record("runs", "r1") == {"status": "ok"}
    assert store.records("runs") == ["r1"]
    report = store.check()
    assert report.entries == 3 and report.clean
    assert store.clear(step="s1") == 1
    assert sorted(m.step for m in store.entries()) == ["s0", "s2"]
    assert store.check().clean
