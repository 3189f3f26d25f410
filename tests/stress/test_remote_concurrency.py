"""Many processes writing and reading the same entries of one remote store at once.

Each worker process writes the same deterministic entries (identical blobs, racing PUTs), plus
entries whose content differs per writer under the same key (a non-deterministic step computed
twice), and reads every entry back while the others write. No read may fail verification or see
a value that no writer wrote; afterwards ``check()`` is clean. Over S3 (moto on loopback) and
over a local directory through fsspec (the temp + move path); some workers share a local cache
directory, so the cache is raced too.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbflow.backends.testing import S3Server, s3_server
from nbflow.store import Store
from nbflow.store.remote import FsspecBackend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SAME = 8  # keys every writer writes with identical content
RACY = 3  # keys every writer writes with its own content
WORKERS = 4
ROUNDS = 2


def same_key(i: int) -> str:
    return f"{i:04x}" * 8


def racy_key(i: int) -> str:
    return f"f{i:03x}" * 8


def same_value(i: int) -> dict[str, Any]:
    return {"i": i, "array": np.full(20_000 + i, i, dtype="i8")}  # out-of-band buffer


def hammer(url: str, options: dict[str, Any], cache_dir: str, worker: int) -> dict[str, int]:
    """One writer/reader process. Any warning from the store (a bad entry) is an error here."""
    from nbflow import NbflowWarning
    from nbflow.store import Store, encode
    from nbflow.store.remote import FsspecBackend

    warnings.simplefilter("error", NbflowWarning)
    store = Store(FsspecBackend(url, cache_dir=cache_dir, manifest_ttl=0, **options))
    reads = 0
    for round_ in range(ROUNDS):
        for i in range(SAME):
            store.put(same_key(i), {"v": encode(same_value(i))}, {"step": f"same{i}"})
        for i in range(RACY):
            store.put(racy_key(i), {"v": encode((i, worker, round_))}, {"step": f"racy{i}"})
        for i in range(SAME):
            manifest = store.get(same_key(i))
            assert manifest is not None, f"entry {i} vanished"
            values = store.load_outputs(manifest)
            assert values is not None
            assert values["v"]["i"] == i and int(values["v"]["array"].sum()) == i * (20_000 + i)
            reads += 1
        for i in range(RACY):
            manifest = store.get(racy_key(i))
            assert manifest is not None
            values = store.load_outputs(manifest)
            assert values is not None
            idx, who, when = values["v"]
            assert idx == i and 0 <= who < WORKERS and 0 <= when < ROUNDS
            reads += 1
    return {"worker": worker, "reads": reads}


def run_workers(url: str, options: dict[str, Any], tmp_path: Path) -> None:
    shared_cache = str(tmp_path / "shared-cache")
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(WORKERS, mp_context=ctx) as pool:
        futures = [
            pool.submit(hammer, url, options,
                        shared_cache if w % 2 == 0 else str(tmp_path / f"cache-{w}"), w)
            for w in range(WORKERS)
        ]
        results = [f.result(timeout=150) for f in futures]
    assert sorted(r["worker"] for r in results) == list(range(WORKERS))
    assert all(r["reads"] == ROUNDS * (SAME + RACY) for r in results)
    store = Store(FsspecBackend(url, cache_dir=str(tmp_path / "checker"), **options))
    report = store.check()
    assert report.entries == SAME + RACY and not report.bad_entries and not report.temp_files
    # overwritten racy entries leave their old blobs behind: orphans, reclaimed by check(fix)
    assert len(report.orphan_blobs) <= WORKERS * ROUNDS * RACY
    store.check(fix=True)
    assert store.check().clean
    for i in range(SAME):
        manifest = store.get(same_key(i))
        assert manifest is not None
        values = store.load_outputs(manifest)
        assert values is not None and values["v"]["i"] == i


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket("nbflow-race")
        yield server


def test_many_writers_on_s3(s3: S3Server, tmp_path: Path) -> None:
    run_workers(f"s3://nbflow-race/{uuid.uuid4().hex[:8]}", s3.storage_options, tmp_path)


def test_many_writers_on_a_directory_through_fsspec(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    run_workers(f"file://{remote}", {}, tmp_path)
    leftovers = [p for p in remote.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    (cache_root,) = (tmp_path / "shared-cache").iterdir()
    assert oct(os.stat(cache_root).st_mode & 0o777) == oct(0o700)
