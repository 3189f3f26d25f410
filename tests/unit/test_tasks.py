"""What a worker gets of a step: its code, pickled by value, still names the file it came from."""

from __future__ import annotations

import pickle
import traceback
from typing import Any

from nbflow.backends.tasks import WorkerStep, pickle_step


def _helper_step() -> tuple[WorkerStep, Any]:
    offset = 1

    def scale(xs: list[float]) -> list[float]:
        return [1 / (x - offset) for x in xs]  # a comprehension: code nested in the function

    def action(values: dict[str, Any]) -> dict[str, Any]:
        return {"ys": scale(values["xs"])}

    return WorkerStep("inverse", ("xs",), ("ys",), action, "code", None, True, None), action


def test_code_pickled_by_value_keeps_its_file_name_and_lines() -> None:
    step, action = _helper_step()
    loaded = pickle.loads(pickle_step(step)[0])
    assert loaded.name == "inverse" and loaded.action({"xs": [3.0]}) == {"ys": [0.5]}
    assert loaded.action is not action  # by value: a copy, as on a worker
    code = loaded.action.__code__
    assert code.co_filename == __file__
    assert code.co_firstlineno == action.__code__.co_firstlineno


def test_a_failure_in_the_copy_shows_the_line_that_raised() -> None:
    step, _action = _helper_step()
    loaded = pickle.loads(pickle_step(step)[0])
    try:
        loaded.action({"xs": [1.0]})
    except ZeroDivisionError as e:
        text = "".join(traceback.format_exception(e))
    else:
        raise AssertionError("1 / 0 did not raise")
    assert f'File "{__file__}"' in text
    assert "return [1 / (x - offset) for x in xs]" in text
    assert "<dynamic-code>" not in text

