"""The local pool (``--max-workers N``): processes and threads give the serial walk's results.

Also a randomized check over DAGs and edits: after every edit, a parallel run and a serial run
on separate stores agree on values and on which steps ran and which were served from the store.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nbflow
from nbflow.backends import add_cli_options, from_cli
from nbflow.backends.local import LocalScheduler

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def processes() -> Iterator[LocalScheduler]:
    scheduler = LocalScheduler(2, "process")
    yield scheduler
    scheduler.close()


@pytest.fixture(scope="module")
def threads() -> Iterator[LocalScheduler]:
    scheduler = LocalScheduler(3, "thread")
    yield scheduler
    scheduler.close()


@dataclass(frozen=True)
class Mix:
    """A picklable action: ``(sum of inputs + c) % 7`` — distinct edits may give equal outputs."""

    c: int
    output: str

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        total = sum(v if isinstance(v, int) else sum(v) for v in values.values())
        return {self.output: (total + self.c) % 7}


@dataclass(frozen=True)
class Each:
    """A foreach action: one item at a time."""

    c: int
    output: str
    over: str

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        rest = sum(v if isinstance(v, int) else sum(v) for k, v in values.items() if k != self.over)
        return {self.output: (values[self.over] * 3 + rest + self.c) % 11}


@dataclass(frozen=True)
class Spread:
    c: int
    output: str

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        total = sum(v if isinstance(v, int) else sum(v) for v in values.values())
        return {self.output: [(total + self.c + i) % 5 for i in range(4)]}


def make_step(i: int, parents: list[int], c: int, lists: set[int]) -> nbflow.Step:
    name = f"s{i}"
    inputs = tuple(f"s{p}" for p in parents)
    list_parent = next((f"s{p}" for p in parents if p in lists), None)
    action: Any
    if i in lists:
        action = Spread(c, name)
    elif list_parent is not None and i % 2 == 0:
        return nbflow.Step(name=name, inputs=inputs, outputs=(name,),
                           action=Each(c, name, list_parent), code=f"each {c}",
                           foreach=list_parent)
    else:
        action = Mix(c, name)
    return nbflow.Step(name=name, inputs=inputs, outputs=(name,), action=action,
                       code=f"{type(action).__name__} {c}")


def random_dag(rng: random.Random, n: int) -> list[tuple[int, list[int], int]]:
    steps = []
    for i in range(n):
        parents = sorted(rng.sample(range(i), k=min(i, rng.randint(0, 2))))
        steps.append((i, parents, rng.randint(0, 6)))
    return steps


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_random_dags_and_edits_match_serial(pool: str, request: pytest.FixtureRequest,
                                            tmp_path: Path) -> None:
    scheduler = request.getfixturevalue(pool)
    rng = random.Random(20261123)
    for case in range(4):
        spec = random_dag(rng, rng.randint(4, 9))
        lists = {i for i, _, _ in spec if rng.random() < 0.3}
        serial = nbflow.Flow("r", store=tmp_path / f"serial-{case}")
        parallel = nbflow.Flow("r", store=tmp_path / f"parallel-{case}")
        for i, parents, c in spec:
            serial.add(make_step(i, parents, c, lists))
            parallel.add(make_step(i, parents, c, lists))
        for edit in range(3):
            a = serial.run()
            b = parallel.run(executor=scheduler)
            assert {k: a[k] for k in a} == {k: b[k] for k in b}, (case, edit)
            assert (a.executed, a.cached) == (b.executed, b.cached), (case, edit)
            i, parents, _ = spec[rng.randrange(len(spec))]
            c = rng.randint(0, 6)
            serial.add(make_step(i, parents, c, lists))
            parallel.add(make_step(i, parents, c, lists))


def test_processes_run_foreach_items_in_parallel(processes: LocalScheduler, tmp_path: Path) -> None:
    flow = nbflow.Flow("fe", store=tmp_path / "s")

    @flow.step
    def items():
        return list(range(4))

    @flow.step(foreach="items")
    def slow(items):
        time.sleep(0.5)
        return items * 10

    flow.run("items")
    processes.executor().submit(int).result()  # the workers are up before timing
    started = time.perf_counter()
    result = flow.run(executor=processes)
    elapsed = time.perf_counter() - started
    assert result["slow"] == [0, 10, 20, 30]
    assert elapsed < 1.9, f"4 x 0.5 s on 2 workers took {elapsed:.2f} s"


def test_threads_share_this_process(threads: LocalScheduler, tmp_path: Path) -> None:
    calls: list[int] = []
    flow = nbflow.Flow("threads", store=tmp_path / "s")

    @flow.step
    def numbers():
        return [1, 2, 3]

    @flow.step(foreach="numbers")
    def seen(numbers):
        calls.append(numbers)  # side effects are visible: no pickling to another process
        return numbers

    assert flow.run(executor=threads)["seen"] == [1, 2, 3]
    assert sorted(calls) == [1, 2, 3]


def test_failure_in_one_item_fails_the_step(processes: LocalScheduler, tmp_path: Path) -> None:
    flow = nbflow.Flow("items", store=tmp_path / "s")

    @flow.step
    def xs():
        return [1, 2, 0, 4]

    @flow.step(foreach="xs")
    def inverse(xs):
        return 1 / xs

    @flow.step
    def total(inverse):
        return sum(inverse)

    result = flow.run(executor=processes, raise_on_failure=False)
    assert result.failed == ["inverse"] and result.skipped == ["total"]
    assert isinstance(result.errors["inverse"], ZeroDivisionError)
    assert "1 / xs" in (flow.status()["inverse"].error or "")


def test_cli_options() -> None:
    parser = argparse.ArgumentParser()
    add_cli_options(parser)
    assert from_cli(parser.parse_args([])) is None
    local = from_cli(parser.parse_args(["--max-workers", "3"]))
    assert isinstance(local, LocalScheduler) and local.max_workers == 3
    dask = from_cli(parser.parse_args(["--executor", "dask", "--address", "tcp://127.0.0.1:9"]))
    assert dask is not None and dask.describe() == "dask on tcp://127.0.0.1:9"
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-workers", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--executor", "spark"])
