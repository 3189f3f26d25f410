"""Task identity (alexflow): significant parameters, records, load_record, partial runs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbflow
from nbflow import Processor, RecordError, load_record
from nbflow.store import value_digest

ROOT = Path(__file__).resolve().parents[2]


def build(store: Path, verbose: bool = False) -> nbflow.Flow:
    """alexflow's example: a data task with two outputs, a model trained on them, a score."""
    flow = nbflow.Flow("alex", store=store)

    @flow.step(outputs=("X", "y"))
    def data(n: int = 20):
        X = np.arange(n, dtype=float).reshape(-1, 1)
        return X, 2.0 * X[:, 0] + 1.0

    if verbose:
        @flow.step(ignore=("verbose",))
        def train(X, y, model_type: str = "lstsq", verbose: bool = True):
            A = np.hstack([X, np.ones_like(X)])
            return np.linalg.lstsq(A, y, rcond=None)[0]
    else:
        @flow.step(ignore=("verbose",))
        def train(X, y, model_type: str = "lstsq", verbose: bool = False):
            A = np.hstack([X, np.ones_like(X)])
            return np.linalg.lstsq(A, y, rcond=None)[0]

    @flow.step
    def score(train, X, y):
        return float(np.abs(X[:, 0] * train[0] + train[1] - y).max())

    return flow


def test_insignificant_parameter_leaves_the_key_unchanged(tmp_path: Path) -> None:
    flow = build(tmp_path)
    flow.run()
    key = flow.plan_keys(["train"])["train"]
    loud = build(tmp_path, verbose=True)
    assert loud.plan_keys(["train"])["train"] == key
    assert loud.run().executed == []
    # imperative nodes: ignore= works on their arguments as well
    imp = nbflow.Flow("imp", store=tmp_path)

    def fit(xs: list[float], verbose: bool) -> float:
        return sum(xs)

    n = imp.add_step(fit, xs=[1.0, 2.0], verbose=False, ignore=("verbose",), name="fit")
    k1 = imp.plan_keys([n])["fit"]
    n = imp.add_step(fit, xs=[1.0, 2.0], verbose=True, ignore=("verbose",), name="fit")
    assert imp.plan_keys([n])["fit"] == k1
    n = imp.add_step(fit, xs=[1.0, 3.0], verbose=True, ignore=("verbose",), name="fit")
    assert imp.plan_keys([n])["fit"] != k1  # a significant parameter does change it


@dataclasses.dataclass
class Train(Processor):
    """alexflow's Task: significant fields, and ``verbose`` with compare=False."""

    model_type: str = "lstsq"
    verbose: bool = dataclasses.field(default=True, compare=False)

    def process(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        A = np.hstack([X, np.ones_like(X)])
        return np.linalg.lstsq(A, y, rcond=None)[0]


def test_dataclass_task_identity(tmp_path: Path) -> None:
    flow = build(tmp_path)
    data = flow.node("data")
    inputs = {"X": data.outputs["o0"], "y": data.outputs["o1"]}
    node = flow.add_node(Train, inputs, init_kwargs={"model_type": "lstsq", "verbose": True},
                         name="task")
    assert np.allclose(flow.run_upto(node), [2.0, 1.0])
    key = flow.plan_keys([node])["task"]
    quiet = flow.add_node(Train, inputs, init_kwargs={"model_type": "lstsq", "verbose": False},
                          name="task")
    assert flow.plan_keys([quiet])["task"] == key
    assert flow.run("task").executed == []
    other = flow.add_node(Train, inputs, init_kwargs={"model_type": "ridge"}, name="task")
    assert flow.plan_keys([other])["task"] != key
    flow.run("task")
    record = flow.describe("task")
    assert record["params"] == {"task.__init__.model_type": "ridge"}


def test_describe_is_a_json_record_of_what_produced_the_output(tmp_path: Path) -> None:
    flow = build(tmp_path)
    result = flow.run("train")
    record = flow.describe("train")
    assert json.loads(json.dumps(record)) == record
    assert record["flow"] == "alex" and record["step"] == "train"
    assert record["key"] == flow.plan_keys(["train"])["train"]
    assert set(record["inputs"]) == {"X", "y", "model_type"}  # verbose is not significant
    assert record["params"] == {"model_type": "lstsq"}
    assert record["ignored"] == ["verbose"]
    assert record["packages"]["numpy"] == np.__version__
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["nbflow"] == nbflow.__version__
    assert len(record["code_digest"]) == 32
    # the output digest traces the artifact itself back to this record
    assert record["output_digests"] == {"train": value_digest(result["train"])}
    assert record["inputs"]["X"] == flow.describe("data")["output_digests"]["X"]
    # processor nodes carry the same kind of record
    g = nbflow.Flow("sums", store=tmp_path)
    const = g.add_constant("MyConst", 100)

    class SumInt(Processor):
        def process(self, a: int, b: int) -> int:
            return int(np.add(a, b))

    n1 = g.add_node(SumInt, {"a": const, "b": 200})
    g.run_upto(n1)
    rec = g.describe(n1)
    assert rec["params"] == {"MyConst": 100, "SumInt.b": 200}
    assert rec["outputs"] == ["SumInt"] and rec["packages"] == {"numpy": np.__version__}


def test_json_record_round_trip_and_load_record_forms(tmp_path: Path) -> None:
    store = tmp_path / "store"
    flow = build(store)
    flow.run()
    record = flow.describe("score")
    path = tmp_path / "score.json"
    path.write_text(json.dumps(record, indent=2))
    assert load_record(path) == record
    assert load_record(str(path), store=store) == record  # checked against the signed entry
    assert load_record(record["key"], store=store) == record
    assert load_record("alex", "score", store=store) == record
    assert load_record(flow, "score") == record
    # a real subprocess reads the same record from the store
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import json, sys, nbflow; "
            "print(json.dumps(nbflow.load_record(sys.argv[1], store=sys.argv[2])))")
    out = subprocess.run([sys.executable, "-c", code, record["key"], str(store)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == record
    # an edited file is refused when a store can check it
    forged = dict(record, params={"n": 999})
    path.write_text(json.dumps(forged))
    assert load_record(path) == forged  # without a store: just the file
    with pytest.raises(RecordError, match="does not match the store's signed record"):
        load_record(path, store=store)


def test_load_record_errors_name_the_fix(tmp_path: Path) -> None:
    store = tmp_path / "store"
    flow = build(store)
    flow.run("X")
    with pytest.raises(RecordError, match="no entry of step 'score' of flow 'alex'"):
        load_record("alex", "score", store=store)
    with pytest.raises(RecordError, match="no entry with key"):
        load_record("0" * 32, store=store)
    with pytest.raises(RecordError, match="not a cache key or a file"):
        load_record("alex", store=store)
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(RecordError, match="not an nbflow record"):
        load_record(bad)
    with pytest.raises(RecordError, match="no record file"):
        load_record(tmp_path / "missing.json")
    with pytest.raises(nbflow.NbflowError, match="run it first"):
        flow.describe("score")


def test_partial_graph_runs_from_any_output(tmp_path: Path) -> None:
    flow = build(tmp_path)
    first = flow.run("y")  # an output of a multi-output step: just that step
    assert first.executed == ["data"]
    r = flow.run("train")
    assert r.executed == ["train"] and r.cached == ["data"]
    assert flow.run("score").executed == ["score"]


def test_large_parameters_are_summarized_in_records(tmp_path: Path) -> None:
    flow = nbflow.Flow("big", store=tmp_path)
    x = flow.add_input("x", list[int])

    def total(x: list[int], note: str) -> int:
        return sum(x)

    flow.add_output("o", flow.add_step(total, x=x, note="n" * 5000))
    data = list(range(100_000))
    assert flow(x=data) == {"o": sum(data)}
    record = flow.describe("total")
    assert record["params"]["x"] == "<list of 100000 items>"
    assert record["params"]["total.note"].endswith("… (5000 chars)")
    assert record["inputs"]["x"] == value_digest(data)  # the exact content, by digest
    assert len(json.dumps(record)) < 3000


def test_a_nan_parameter_is_recorded_as_text_and_its_record_file_still_matches(tmp_path: Path) -> None:
    """JSON has no NaN: the record says "nan", so a record file written with json.dump is the
    stored record, whichever encoder wrote the entry."""
    flow = nbflow.Flow("nan", store=tmp_path / "s")
    x = flow.add_input("x", float)

    def half(x: float) -> float:
        return x / 2

    flow.add_output("o", flow.add_step(half, x=x))
    flow(x=float("nan"))
    record = flow.describe("half")
    assert record["params"]["x"] == "nan"
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    assert load_record(path, store=tmp_path / "s") == record
