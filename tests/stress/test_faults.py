"""Fault injection on a real filesystem: kill -9 mid-write, concurrency, ENOSPC, EIO."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

import nbflow
from nbflow.errors import NbflowWarning
from nbflow.store import Store, open_store
from nbflow.store.backend import LocalBackend

sys.path.insert(0, str(Path(__file__).parent))
from writer import check_value, key_of  # noqa: E402

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def read_all(root: Path) -> tuple[int, int]:
    """Read every entry; a wrong value fails the test. Returns (good, missing-or-bad)."""
    store = open_store(root)
    good = bad = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NbflowWarning)
        for i in range(40):
            m = store.get(key_of(i))
            values = store.load_outputs(m) if m is not None else None
            if values is None:
                bad += 1
                continue
            check_value(i, values["v"])
            good += 1
    return good, bad


def test_kill_9_writer_mid_write_never_corrupts(tmp_path: Path) -> None:
    root = tmp_path / "s"
    loops = int(os.environ.get("NBFLOW_KILL_LOOPS", "50"))
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    total_good = 0
    for loop in range(loops):
        proc = subprocess.Popen([sys.executable, str(HERE / "writer.py"), str(root), str(loop * 7), "-1"], env=env)
        time.sleep(rng.uniform(0.15, 0.45))  # interpreter start + some writes, then die anywhere
        proc.kill()
        proc.wait()
        good, _ = read_all(root)
        total_good += good
    assert total_good > 0  # the writers did commit entries, and every one read back right
    report = open_store(root).check(temp_age=0)
    assert report.bad_entries == []  # killed writers leave temp files at most, never bad entries
    open_store(root).check(fix=True, temp_age=0)
    assert open_store(root).check(temp_age=0).clean


def test_4_processes_x_4_threads_share_a_store(tmp_path: Path) -> None:
    root = tmp_path / "s"
    script = f"""
import sys, threading
sys.path.insert(0, {str(HERE)!r})
from writer import key_of, value_of, check_value
from nbflow.store import open_store, encode
store = open_store({str(root)!r})
errors = []
def work(t):
    try:
        for n in range(30):
            i = (n * 7 + t) % 40
            if n % 2:
                store.put(key_of(i), {{"v": encode(value_of(i))}}, {{"step": "w", "flow": "stress"}})
            m = store.get(key_of(i))
            if m is not None:
                v = store.load_outputs(m)
                assert v is not None, "a committed entry failed to load"
                check_value(i, v["v"])
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print("ERRORS", errors)
sys.exit(1 if errors else 0)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    written = {(n * 7 + t) % 40 for n in range(1, 30, 2) for t in range(4)}
    good, bad = read_all(root)
    assert good == len(written) and bad == 40 - len(written)
    assert open_store(root).check(temp_age=0).clean


def small_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def test_disk_full_keeps_values_and_earlier_entries(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    small_tmpfs(mnt, "2m")  # a real, tiny filesystem: writes fail with ENOSPC
    try:
        flow = nbflow.Flow("full", store=mnt / "s")

        @flow.step
        def small():
            return list(range(100))

        @flow.step
        def huge(small):
            return np.ones(1_000_000) * len(small)  # 8 MB: cannot fit

        flow.run("small")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            result = flow.run()
        msgs = [str(x.message) for x in w if issubclass(x.category, NbflowWarning)]
        assert len(msgs) == 1 and "not cached" in msgs[0] and "No space left" in msgs[0]
        assert float(result["huge"][0]) == 100.0  # the run still returns its values
        assert result.cached == ["small"]
        store = open_store(mnt / "s")
        leftovers = [p for p in (mnt / "s").rglob(".tmp-*")]
        assert leftovers == []
        assert store.check(temp_age=0).bad_entries == []
        again = nbflow.Flow("full", store=mnt / "s")
        again.graph = flow.graph
        assert again.run("small").cached == ["small"]  # earlier entries intact
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class FailingBackend(LocalBackend):
    """A real local directory whose writes fail with EIO halfway through the Nth write."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.writes = 0
        self.fail_at = fail_at

    def write_atomic(self, path: str, chunks: Iterable[bytes | memoryview]) -> None:
        self.writes += 1
        if self.writes != self.fail_at:
            return super().write_atomic(path, chunks)

        def broken() -> Iterable[bytes | memoryview]:
            for chunk in chunks:
                yield bytes(chunk)[: len(chunk) // 2]
                raise OSError(errno.EIO, "Input/output error")

        return super().write_atomic(path, broken())


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_io_error_mid_write(tmp_path: Path, fail_at: int) -> None:
    root = tmp_path / "s"
    flow = nbflow.Flow("eio", store=root)

    @flow.step
    def first():
        return "kept"

    flow.run()
    flow._store = Store(FailingBackend(root, fail_at))

    @flow.step
    def second(first):
        return {"big": np.arange(300_000), "first": first}

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        result = flow.run()
    assert result["second"]["first"] == "kept"
    assert any("Input/output error" in str(x.message) for x in w)
    assert list(root.rglob(".tmp-*")) == []
    fresh = open_store(root)
    assert fresh.check(temp_age=0).bad_entries == []
    assert fresh.get(flow.status()["first"].key or "") is not None
