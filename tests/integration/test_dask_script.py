"""A flow script's command line on the scale-out back ends, in real subprocesses:
``run --executor dask --store s3://...`` (credentials and endpoint the fsspec way, from the
environment), then ``run --max-workers 2`` and a serial ``run`` served from the same S3 store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow.backends.testing import S3Server, s3_server

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    '''
    """A flow script, as nbflow export writes them."""
    import os

    import nbflow

    flow = nbflow.Flow("scripted", store=".nbflow")
    flow.param("n", 6)


    @flow.step
    def numbers(n):
        return list(range(n))


    @flow.step(foreach="numbers")
    def squared(numbers):
        return numbers * numbers


    @flow.step
    def where(numbers):
        return os.getpid()


    @flow.step(outputs=("total", "count"))
    def summary(squared, where):
        return sum(squared), len(squared)


    if __name__ == "__main__":
        with open(os.environ["DRIVER_PID_FILE"], "w") as f:
            f.write(str(os.getpid()))
        flow.main()
    '''
)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket("nbflow-script")
        yield server


def run_script(script: Path, args: list[str], env: dict[str, str], summary: Path) -> dict:
    out = subprocess.run([sys.executable, str(script), "run", "--quiet", "--summary-json",
                          str(summary), *args], cwd=script.parent, env=env, capture_output=True,
                         text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    return json.loads(summary.read_text())


def test_script_runs_on_dask_and_the_local_pool_with_an_s3_store(s3: S3Server,
                                                                 tmp_path: Path) -> None:
    script = tmp_path / "scripted_flow.py"
    script.write_text(SCRIPT)
    url = f"s3://nbflow-script/{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NBFLOW_CACHE_DIR": str(tmp_path / "cache"),
           "FSSPEC_S3_ENDPOINT_URL": s3.endpoint_url, "DRIVER_PID_FILE": str(tmp_path / "pid")}
    first = run_script(script, ["--executor", "dask", "--max-workers", "2", "--store", url,
                                "--n", "5"], env, tmp_path / "a.json")
    assert sorted(first["executed"]) == ["numbers", "squared", "summary", "where"]
    assert first["cached"] == []
    driver = int((tmp_path / "pid").read_text())
    again = run_script(script, ["--max-workers", "2", "--store", url, "--n", "5"], env,
                       tmp_path / "b.json")
    assert again["executed"] == [] and sorted(again["cached"]) == sorted(first["executed"])
    changed = run_script(script, ["--store", url, "--n", "7"], env, tmp_path / "c.json")
    assert sorted(changed["executed"]) == ["numbers", "squared", "summary", "where"]

    import nbflow

    store = nbflow.open_store(url, cache_dir=str(tmp_path / "check"), **s3.storage_options)
    where = store.get(first["keys"]["where"])
    assert where is not None
    assert store.load(where, "where") != driver  # the step ran on a Dask worker
    totals = sorted(m.step for m in store.entries() if m.step == "summary")
    assert totals == ["summary", "summary"]  # n=5 and n=7, each computed once
    assert not store.check().bad_entries
