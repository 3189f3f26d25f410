"""``%%step`` notebooks executed in real kernels (nbclient + ipykernel), several times over one store.

Side effects prove what ran: every step appends its name to ``steps.log`` beside the notebook.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_helpers import (
    ROOT,
    LiveKernel,
    errors_of,
    is_cached,
    plain_of,
    read_log,
    run_notebook,
    text_of,
    user_outputs,
    write_notebook,
)

pytestmark = pytest.mark.timeout(180)

MARK = (
    "import os\n"
    "LOG = os.path.join(os.getcwd(), 'steps.log')\n"
    "def mark(name):\n"
    "    with open(LOG, 'a') as f:\n"
    "        f.write(name + '\\n')"
)

PIPELINE = [
    "%load_ext nbflow",
    MARK,
    "scale = 3",
    "%%step raw\nmark('raw')\nimport pandas as pd\n"
    "df = pd.DataFrame({'a': range(6), 'b': list('xyzxyz')})\nprint('rows', len(df))\ndf.head(3)",
    "%%step totals\nmark('totals')\ntotals = df.groupby('b').a.sum() * scale\ntotals",
    "%%step plot\nmark('plot')\nimport matplotlib.pyplot as plt\n_fig, _ax = plt.subplots()\n"
    "_ax.plot(totals.values)\npeak = int(totals.max())\nprint('peak', peak)",
    "import nbflow\n\n@nbflow.step\ndef report(totals, peak):\n    mark('report')\n"
    "    return f'{len(totals)} groups, peak {peak}'",
    "%%step final\nmark('final')\nsummary = report.upper()\nprint(summary)",
    "%%step side\nmark('side')\nother = scale * 10",
    "import json\nfrom nbflow.notebook import live_flow\nfl = live_flow()\n"
    "print('META', json.dumps({n: s.meta.get('cell_id') for n, s in fl.graph.steps.items()}))\n"
    "print('NAME', fl.name)\nprint('FUNC', callable(report), summary)",
    "%flow status",
]
STEP_CELLS = {3: "raw", 4: "totals", 5: "plot", 7: "final", 8: "side"}


def _edit(path: Path, index: int, old: str, new: str) -> None:
    nb = nbformat.read(path, as_version=4)
    assert old in nb.cells[index].source
    nb.cells[index].source = nb.cells[index].source.replace(old, new)
    nbformat.write(nb, path)


def test_cached_rerun_edits_and_early_cutoff(notebook_dir: Path) -> None:
    path = write_notebook(notebook_dir / "pipeline.ipynb", PIPELINE)
    log = notebook_dir / "steps.log"

    # 1. first run: every step executes, with live output
    first = run_notebook(path)
    assert read_log(log) == ["raw", "totals", "plot", "report", "final", "side"]
    assert not any(is_cached(first.cells[i]) for i in STEP_CELLS)
    assert "rows 6" in text_of(first.cells[3])
    assert any("text/html" in o.get("data", {}) for o in first.cells[3].outputs)  # df.head()
    pngs = [o for o in first.cells[5].outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, first.cells[5].outputs
    assert "running step 'report'" in plain_of(first.cells[7])  # an upstream function step
    assert "3 GROUPS, PEAK 21" in text_of(first.cells[7])
    meta_line = next(line for line in text_of(first.cells[9]).splitlines() if line.startswith("META"))
    assert json.loads(meta_line[5:]) == {"raw": "c3", "totals": "c4", "plot": "c5", "report": "c6",
                                         "final": "c7", "side": "c8"}
    assert "NAME pipeline" in text_of(first.cells[9])
    assert "FUNC True 3 GROUPS" in text_of(first.cells[9])  # the function keeps its name

    # 2. a fresh kernel, same notebook: nothing runs, everything is replayed
    log.unlink()
    second = run_notebook(path)
    assert read_log(log) == []
    for i, name in STEP_CELLS.items():
        assert is_cached(second.cells[i]), (name, second.cells[i].outputs)
        assert user_outputs(second.cells[i]) == user_outputs(first.cells[i]), name
        assert "cached, saved" in plain_of(second.cells[i])
    replayed = [o for o in second.cells[5].outputs if "image/png" in o.get("data", {})]
    assert len(replayed) == 1 and replayed[0]["data"]["image/png"] == pngs[0]["data"]["image/png"]
    assert "FUNC True 3 GROUPS, PEAK 21" in text_of(second.cells[9])
    status = text_of(second.cells[10])
    assert all(f"{n}" in status for n in STEP_CELLS.values()) and "stale" not in status

    # 3. edit one cell in the .ipynb: exactly it and its descendants run again
    _edit(path, 4, "* scale", "* scale + 1")
    third = run_notebook(path)
    assert read_log(log) == ["totals", "plot", "report", "final"]
    assert is_cached(third.cells[3]) and is_cached(third.cells[8])
    assert "3 GROUPS, PEAK 22" in text_of(third.cells[7])

    # 4. early cutoff and normalization: `raw` changes code but not its data (its children stay
    #    cached); a comment in `side` changes nothing at all
    log.unlink()
    _edit(path, 3, "print('rows', len(df))", "print('number of rows:', len(df))")
    _edit(path, 8, "other = scale * 10", "other = scale * 10  # a comment")
    fourth = run_notebook(path)
    assert read_log(log) == ["raw"]
    assert "number of rows: 6" in text_of(fourth.cells[3])
    assert all(is_cached(fourth.cells[i]) for i in (4, 5, 7, 8))


def test_rerun_and_auto_mode(notebook_dir: Path) -> None:
    cells = [
        "%load_ext nbflow",
        MARK,
        "%%step a\nmark('a')\nx = 1",
        "%%step b\nmark('b')\ny = x + 1",
        "%%step c\nmark('c')\nz = y * 2",
        "%flow rerun b",
        "%flow config mode=auto",
        "%%step a\nmark('a')\nx = 2",
        "print('XYZ', x, y, z)",
        "%%step a\nmark('a')\nx = 2",
        "%flow invalidate c",
        "%flow run",
        "print('XYZ', x, y, z)",
    ]
    path = write_notebook(notebook_dir / "auto.ipynb", cells)
    nb = run_notebook(path)
    log = read_log(notebook_dir / "steps.log")
    # rerun b: b is forced, c stays cached (b's output did not change: early cutoff);
    # auto mode: editing a re-runs b and c at once; re-running an unchanged a runs nothing;
    # invalidate c + run: only c
    assert log == ["a", "b", "c", "b", "a", "b", "c", "c"]
    assert "ran 1 step (b" in plain_of(nb.cells[5]) and "2 from cache" in plain_of(nb.cells[5])
    assert "running step 'b' (downstream of 'a')" in plain_of(nb.cells[7])
    assert "XYZ 2 3 6" in text_of(nb.cells[8])
    assert is_cached(nb.cells[9])
    assert "stale now: c" in text_of(nb.cells[10])
    assert "ran 1 step (c" in plain_of(nb.cells[11])
    assert "XYZ 2 3 6" in text_of(nb.cells[12])


ERRORS = [
    "%load_ext nbflow",
    "%%step 1load\nx = 1",
    "%%step ok --outputs x\nx = 1",
    "%%step a\nx = 1",
    "%%step b\nx = 2",
    "%%step c\ny = never_defined + 1",
    "%%step d\np = x + 1",
    "%%step e\nq = p + 1",
    "%%step d\np = q + x",
    "%%step boom\ndef helper():\n    raise ValueError('bad value 42')\nw = helper()",
    "%%step after\nv = x * 10\nprint('after', v, p)",
    "%flow rerun nosuch",
    "%flow cache gc --max-size lots",
    "%%step e2\nfrom os.path import *\nr = 1",
    "%%step boom\nw = 7",
    "%%step needs_boom\nprint('W', w)",
    "%flow status",
    "%step --help",
    "%%step mutate\nimport pandas as pd\nframe = pd.DataFrame({'a': [1, 2]})",
    "%%step touch\nframe['b'] = frame.a * 2\nncols = len(frame.columns)",
]


def test_bad_input_is_one_clear_line_and_the_kernel_keeps_working(notebook_dir: Path) -> None:
    path = write_notebook(notebook_dir / "errors.ipynb", ERRORS)
    nb = run_notebook(path, allow_errors=True)
    cells = nb.cells

    def usage(i: int) -> str:
        err = text_of(cells[i], "stderr")
        assert err.startswith("UsageError: "), (i, cells[i].outputs)
        assert "Traceback" not in err and not errors_of(cells[i]), i  # no traceback wall
        assert len(err.strip().splitlines()) == 1, err
        return err

    assert "'1load' is not a Python identifier" in usage(1)
    assert "unknown option '--outputs'" in usage(2) and "--out" in usage(2)
    assert not text_of(cells[3], "stderr")
    dup = usage(4)
    assert "step 'b' binds 'x', which step 'a' already defines" in dup and "--out" in dup
    missing = usage(5)
    assert "step 'c' reads 'never_defined', which no step defines" in missing
    assert "--in" in missing
    cycle = usage(8)
    assert "cycle" in cycle and ("d -> e -> d" in cycle or "e -> d -> e" in cycle)
    # a step's own exception: the user's traceback, none of nbflow's frames
    (boom,) = errors_of(cells[9])
    assert boom["ename"] == "ValueError" and "bad value 42" in boom["evalue"]
    tb = "\n".join(boom["traceback"])
    assert "helper" in tb and "nbflow" not in tb.replace("nbflow:", "")
    # the flow and the kernel keep working: the old d (p = x + 1) is still the step
    assert "after 10 2" in text_of(cells[10])
    assert "no step named 'nosuch'" in usage(11) and "steps: a, d, e, boom, after" in usage(11)
    assert "'lots' is not a size" in usage(12)
    assert "import *" in usage(13) and "step 'e2'" in usage(13)
    assert not errors_of(cells[14]) and "W 7" in text_of(cells[15])
    status = text_of(cells[16])
    assert "boom" in status and "after" in status
    assert "--no-cache" in text_of(cells[17])
    # mutation: named step and variable, and the fix
    warning = text_of(cells[19], "stderr")
    assert "step 'touch' changed its input 'frame' (from step 'mutate') in place" in warning
    assert "frame = frame.copy()" in warning


def _pair(name: str, value: str) -> list[str]:
    return [
        "%load_ext nbflow",
        MARK,
        f"%%step load\nmark('{name}')\nvalue = '{value}'",
        "%%step show\nprint('VALUE', value)",
        "%flow cache ls",
    ]


def test_two_notebooks_in_one_folder_do_not_collide(notebook_dir: Path) -> None:
    one = write_notebook(notebook_dir / "one.ipynb", _pair("one", "first"))
    two = write_notebook(notebook_dir / "two.ipynb", _pair("two", "second"))
    log = notebook_dir / "steps.log"
    a = run_notebook(one)
    b = run_notebook(two)
    assert read_log(log) == ["one", "two"]
    assert "VALUE first" in text_of(a.cells[3]) and "VALUE second" in text_of(b.cells[3])
    assert "cache of flow 'two'" in text_of(b.cells[4]) and "2 entries" in text_of(b.cells[4])
    again = run_notebook(one)
    assert read_log(log) == ["one", "two"]
    assert is_cached(again.cells[2]) and "VALUE first" in text_of(again.cells[3])
    assert (notebook_dir / ".nbflow").is_dir()  # one shared store beside both notebooks


def test_demo_serves_second_run_from_cache() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "example_notebooks" / "run_demo.py"), "sales_analysis.ipynb"],
        capture_output=True, text=True, timeout=150, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "second run: 0 step(s) executed, 5 served from the cache" in proc.stdout, proc.stdout
    assert "OK: the second run was served from the cache with identical outputs" in proc.stdout


def test_editing_a_cell_in_a_live_kernel_marks_descendants_stale(notebook_dir: Path) -> None:
    cells = [
        "%load_ext nbflow",
        MARK,
        "%%step a\nmark('a')\nx = 1",
        "%%step b\nmark('b')\ny = x + 1",
        "%%step c\nmark('c')\nz = y * 2\nprint('Z', z)",
        "%flow status",
    ]
    path = write_notebook(notebook_dir / "live.ipynb", cells)
    log = notebook_dir / "steps.log"
    with LiveKernel(path) as k:
        for i in range(len(cells)):
            k.run(i)
        assert read_log(log) == ["a", "b", "c"]
        k.run(2, "%%step a\nmark('a')\nx = 5")  # the user edits a and runs it
        status = _status_rows(k.run(5))
        assert status["a"] == "done" and status["b"] == "stale" and status["c"] == "stale"
        c = k.run(4)  # running c first brings b up to date, like make
        assert read_log(log) == ["a", "b", "c", "a", "b", "c"]
        assert "running step 'b' (upstream of 'c', out of date)" in plain_of(c)
        assert "Z 12" in text_of(c)
        status = _status_rows(k.run(5))
        assert set(status.values()) <= {"done", "cached"}
        k.run(4, "%%step c_final\nmark('c')\nz = y * 2\nprint('Z', z)")  # renamed in place
        status = _status_rows(k.run(5))
        assert "c_final" in status and "c" not in status
        assert read_log(log)[-1] == "c"
        again = k.run(2)  # unchanged: served from the cache, nothing stale
        assert is_cached(again)
        # one cell defining two function steps, run twice: both stay (ids name cells, not steps)
        two = ("import nbflow\n@nbflow.step\ndef double(x):\n    return x * 2\n"
               "@nbflow.step\ndef triple(x):\n    return x * 3")
        k.run(5, two)
        k.run(5, two)
        report = k.run(4, "%%step c_final\nmark('c')\nz = y * 2\nprint('Z', z, double + triple)")
        assert "Z 12 25" in text_of(report)


def _status_rows(cell: Any) -> dict[str, str]:
    rows = {}
    for line in text_of(cell).splitlines()[3:]:
        parts = line.split()
        if len(parts) >= 2:
            rows[parts[0]] = parts[1]
    return rows


def test_interrupting_a_step_is_one_line_and_nothing_is_stored(notebook_dir: Path) -> None:
    import os
    import signal
    import threading
    import time

    from nbclient.exceptions import CellExecutionError

    cells = ["%load_ext nbflow", "%%step fast\nx = 1",
             "%%step slow\nimport time\nfor _ in range(600):\n    time.sleep(0.05)\ny = x + 1",
             "%flow status"]
    path = write_notebook(notebook_dir / "interrupt.ipynb", cells)
    with LiveKernel(path) as k:
        k.run(0)
        k.run(1)
        pid = k.client.km.provisioner.process.pid  # what Jupyter's interrupt button does: SIGINT
        timer = threading.Timer(1.5, os.kill, (pid, signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(CellExecutionError):
            k.run(2)
        assert time.monotonic() - started < 20
        (err,) = errors_of(k.nb.cells[2])
        assert err["ename"] == "KeyboardInterrupt"
        assert err["traceback"] == ["KeyboardInterrupt: step 'slow' was interrupted; nothing of it "
                                    "was stored, earlier steps stay cached"]
        status = _status_rows(k.run(3))
        assert status["fast"] in ("done", "cached") and status["slow"] in ("failed", "stale")


def test_a_full_disk_after_a_cell_is_told_with_the_next_and_nothing_is_lost(
        notebook_dir: Path) -> None:
    """A cell's entry is committed once the kernel is idle: when the disk is full by then, the
    next cell says so, earlier entries stay, and a new kernel runs the step again."""
    disk = notebook_dir / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        cells = [
            "%load_ext nbflow", MARK,
            "%%step kept\nmark('kept')\nk = 1",
            "if os.environ['FILL'] == '1':  # a real, full filesystem from here on\n"
            "    with open(os.path.join(os.environ['NBFLOW_STORE'], '..', 'fill'), 'wb',\n"
            "              buffering=0) as f:\n"
            "        try:\n"
            "            while True:\n"
            "                f.write(b'x' * 4096)\n"
            "        except OSError:\n"
            "            pass",
            "%%step lost\nmark('lost')\nv = k + 41\nprint(v)",
            "print('next')",
        ]
        path = write_notebook(notebook_dir / "full.ipynb", cells)
        store = str(disk / "store")
        nb = run_notebook(path, NBFLOW_STORE=store, FILL="1")
        assert text_of(nb.cells[4]) == "42\n" and not errors_of(nb.cells[4])
        assert text_of(nb.cells[5], "stdout") == "next\n"
        assert text_of(nb.cells[5], "stderr") == (
            "nbflow: step 'lost' ran but its outputs were not cached (OSError: [Errno 28] No "
            "space left on device); earlier cache entries are intact\n")
        (disk / "fill").unlink()
        again = run_notebook(path, NBFLOW_STORE=store, FILL="0")
        assert is_cached(again.cells[2]) and not is_cached(again.cells[4])
        assert text_of(again.cells[4]) == "42\n" and text_of(again.cells[5], "stderr") == ""
        assert read_log(notebook_dir / "steps.log") == ["kept", "lost", "lost"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
