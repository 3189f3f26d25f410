"""Overhead of the notebook adapter, measured in-process with a real IPython InteractiveShell.

    .venv/bin/python bench/bench_notebook.py [--steps 200] [--repeat 300]

1. nbflow's own work per typical ``%%step`` cell (parse, key, bookkeeping, and its hooks
   before and after the cell; user code and I/O excluded) — target ≤ 1 ms median — on
   a cache hit when the cell is re-run, on a cache hit the first time a fresh kernel sees the
   cell (restart + run all), and on a miss; baseline: the same code as a plain cell through
   the same shell. "Comm attached" means a front end listens, and every message to it is
   built, packed and signed as a kernel would. A worst case follows, the middle cell of a long
   chain: it shows how the work grows with the ancestors a cell re-checks (no target). And
   the comm's share of a miss, measured paired (the sections follow one another, and the
   machine's pace drifts between them). What nbflow sets aside until the kernel is idle after
   the cell (a new cell's parse record; a new entry's manifest, encoded, signed and written
   then; the comm's statuses, sent then) is timed apart.
2. ``%flow status`` of a 200-step notebook — target ≤ 50 ms.
3. the tax on a plain cell (no magic) once nbflow is loaded: baseline, the same shell without
   nbflow. With a front end attached, steps' statuses are re-read once the kernel is idle, off
   the cell's path; that deferred work is timed on its own.

It runs inside an asyncio loop, as cells do in ipykernel, so deferred work is deferred here too,
after a warm-up pass that is not reported.

I/O is timed apart and taken out of "own work": the store's backend methods (the real ones,
called through), and the kernel's packing and signing of each message to the front end (what
ipykernel's ``Session`` does before the socket takes it). Both are also reported, and so is
everything nbflow adds to a cell, I/O included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("NBFLOW_KEY_FILE", str(Path(tempfile.mkdtemp()) / "hmac.key"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import comm as comm_lib  # noqa: E402
from ipykernel.compiler import XCachingCompiler  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from jupyter_client.session import Session  # noqa: E402

from nbflow.notebook import current_session, parse  # noqa: E402

IO_METHODS = ("read", "map", "write_atomic", "signature", "size", "touch", "remove", "walk")


class IOClock:
    """Accumulates time spent in the store backend's I/O methods (and, in ``messages``, the
    kernel's packing of front-end messages)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.messages = 0.0

    def wrap(self, backend: Any) -> None:
        for name in IO_METHODS:
            original = getattr(backend, name, None)
            if original is None or getattr(original, "_nbflow_timed", False):
                continue
            setattr(backend, name, self._timed(original))

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
                if name_is_generator(result):
                    result = list(result)
                return result
            finally:
                self.seconds += time.perf_counter() - t

        timed._nbflow_timed = True  # type: ignore[attr-defined]
        return timed


def name_is_generator(value: Any) -> bool:
    return hasattr(value, "__next__") and hasattr(value, "__iter__")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Cell output goes to a buffer (the kernel would send it asynchronously)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def line(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<58} {value:>12}  {note}")


def typical_cell(i: int) -> str:
    """~8 lines: reads two outputs of earlier steps and two globals, binds two names."""
    prev = f"a{i - 1}" if i else "seed"
    prev2 = f"b{i - 2}" if i >= 2 else "seed"
    return (
        f"%%step s{i}\n"
        f"# step {i}: combine the previous results\n"
        f"import math\n"
        f"_scale = factor * 2\n"
        f"_total = {prev} + {prev2} * _scale\n"
        f"a{i} = math.floor(_total) % 1000\n"
        f"b{i} = a{i} + offset\n"
        f"if a{i} < 0:\n"
        f"    print('negative', a{i})\n"
    )


_EDITS = itertools.count(1001)


def edited(cell: str) -> str:
    """``cell`` with one statement changed, never the same way twice in the process: what
    nbflow memoizes per statement (parse, analysis, code) is then as cold as after a user's
    edit, not warm from an earlier section's same edit."""
    return cell.replace("% 1000", f"% {next(_EDITS)}")


def plain_of(cell: str) -> str:
    return cell.split("\n", 1)[1]


class WireComm(comm_lib.DummyComm):
    """A comm that builds, packs and signs each message with a jupyter_client Session, as
    ipykernel does on the kernel's main thread before the IOPub socket takes it, so what the
    kernel would send a front end is paid for here too (the socket write is not)."""

    _session = Session(key=b"bench")
    _parent = _session.msg("execute_request", {"code": ""})

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        t = time.perf_counter()
        content = {"comm_id": self.comm_id, "data": data or {}, **keys}
        msg = self._session.msg(msg_type, content, parent=self._parent, metadata=metadata or {})
        self._session.serialize(msg)
        MESSAGES.messages += time.perf_counter() - t


comm_lib.create_comm = WireComm  # what a kernel's comm manager would make
MESSAGES = IOClock()  # the time the kernel spends packing front-end messages


class BenchKernel:
    """What nbflow asks of a kernel: the request being handled (none here). With it, nbflow
    sets work aside until the kernel is idle, as it does in ipykernel; ``idle()`` does it."""

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        return {}


def setup_shell(workdir: Path, comm: bool = True) -> tuple[InteractiveShell, Any, IOClock]:
    os.chdir(workdir)
    os.environ["JPY_SESSION_NAME"] = str(workdir / "bench.ipynb")
    # ipykernel's compiler, as in a kernel: it names each cell's file by a hash of its text
    shell = InteractiveShell.instance(compiler_class=XCachingCompiler)
    shell.kernel = BenchKernel()  # type: ignore[attr-defined]
    with quiet():
        shell.run_cell("%unload_ext nbflow")
        shell.reset(new_session=True)
        shell.run_cell("%load_ext nbflow")
        shell.run_cell("seed = 1\nfactor = 3\noffset = 7")
    session = current_session()
    assert session is not None
    if not comm and session.comm is not None:
        session.comm.close()  # measure without the JupyterLab comm's event handling
    clock = IOClock()
    clock.wrap(session.flow.store.backend)
    return shell, session, clock


def run(shell: InteractiveShell, source: str) -> float:
    with quiet():
        t = time.perf_counter()
        result = shell.run_cell(source)
        elapsed = time.perf_counter() - t
    if not result.success:
        raise RuntimeError(f"cell failed: {source!r}: {result.error_in_exec or result.error_before_exec}")
    idle()
    return elapsed


def idle() -> float:
    """What a kernel does once a cell is over and before the next: the work nbflow set aside
    until then (the parse record of a new cell; the manifests of new entries; the comm's
    statuses and bookkeeping). Returns its time (not part of the cell's)."""
    session = current_session()
    if session is None:
        return 0.0
    t = time.perf_counter()
    due = session._idle_due  # the loop's call of it, which this loop does not get to run
    if due is not None:
        due.cancel()
    session.flush_idle()
    if session.comm is not None:
        session.comm.settle()  # cancels the loop's call of it likewise
    return time.perf_counter() - t


def magic_time(shell: InteractiveShell, session: Any, clock: IOClock, body_line: str,
               body: str) -> tuple[float, float]:
    """(seconds of nbflow's work for one ``%%step`` cell, of which I/O): the magic and
    nbflow's hooks before and after the cell (the front end's updates are sent from them)."""
    clock.seconds = MESSAGES.messages = 0.0
    info = _Info(f"%%step {body_line}\n{body}")
    with quiet():
        t = time.perf_counter()
        shell.events.trigger("pre_run_cell", info)
        session.step_cell(body_line, body)
        shell.events.trigger("post_run_cell", _Result(info))
        total = time.perf_counter() - t
    return total, clock.seconds + MESSAGES.messages


def bench_cells(steps: int, repeat: int, comm: bool = True, first_runs: int = 30,
                rounds: int = 10) -> dict[str, float]:
    """A notebook of ``steps`` chained step cells; the measured cell is the middle one, so it
    has ``steps // 2`` ancestors whose keys the engine checks on every run (``make``).

    The scenarios take turns, ``rounds`` times, each a slice of its samples: a slow spell of
    the machine then weighs on all of them alike rather than on whichever ran during it.
    """
    work = Path(tempfile.mkdtemp(prefix="nbflow-bench-nb-"))
    shell, session, clock = setup_shell(work, comm)
    cells = [typical_cell(i) for i in range(steps)]
    for c in cells:  # first run: everything executes and is stored
        run(shell, c)
    middle = len(cells) // 2
    target = cells[middle]
    head, body = target.split("\n", 1)
    name_line = head[len("%%step "):]
    plain = plain_of(target)
    samples: dict[str, list[float]] = defaultdict(list)
    per, per_first = max(repeat // rounds, 1), max(first_runs // rounds, 1)
    round_baselines = []
    for _ in range(rounds):
        # baseline: the same code as a plain cell
        batch = [run(shell, plain) for _ in range(per)]
        samples["baseline"] += batch
        round_baselines.append(statistics.median(batch))
        # a hit, re-running the cell (parse and compile memoized, as when a user re-runs it)
        run(shell, target)
        samples["hit_whole"] += [run(shell, target) for _ in range(per)]
        for _ in range(per):
            total, io_s = magic_time(shell, session, clock, name_line, body)
            samples["hit_own"].append(total - io_s)
            samples["hit_all"].append(total)
            samples["hit_io"].append(io_s)
            samples["hit_idle"].append(idle())
        # a miss: new code each time (the cell runs and its outputs are written). The user's
        # own code is timed alone, and the median of the round's edits is taken out of each
        # (one slow spell while timing it alone would otherwise make a sample's own work
        # too small, even negative)
        edits = [edited(target).split("\n", 1) for _ in range(min(per, 20))]
        users = []
        for _, rest in edits:
            code = compile(rest, "<user>", "exec")
            t = time.perf_counter()
            exec(code, dict(shell.user_ns))
            users.append(time.perf_counter() - t)
        user = statistics.median(users)
        for head, rest in edits:
            total, io_s = magic_time(shell, session, clock, head[len("%%step "):], rest)
            samples["miss_own"].append(total - io_s - user)
            samples["miss_all"].append(total - user)
            samples["miss_io"].append(io_s)
            samples["miss_idle"].append(idle())
        # a hit the first time a fresh kernel sees the cell (restart + run all): nothing
        # memoized, the store's records remain
        for _ in range(per_first):
            shell, session, clock = setup_shell(work, comm)
            parse.clear_memo()
            for c in cells[:middle]:
                run(shell, c)
            total, io_s = magic_time(shell, session, clock, name_line, body)
            samples["first_own"].append(total - io_s)
            samples["first_all"].append(total)
            samples["first_io"].append(io_s)
            samples["first_idle"].append(idle())
        for c in cells[middle + 1:]:  # the rest of the notebook, as before
            run(shell, c)
    return {
        **{f"{k}_min": min(samples[k]) for k in ("hit_own", "first_own", "miss_own", "baseline")},
        **{k: statistics.median(v) for k, v in samples.items()},
        "ancestors": float(middle),
        "round_fast": min(round_baselines), "round_slow": max(round_baselines),
    }


def bench_comm_paired(steps: int, pairs: int) -> dict[str, float]:
    """What the JupyterLab comm adds to a miss, measured paired in one shell: its cell hooks
    and its event subscription are switched off and on for every other edit, so that the
    machine's pace, which drifts between the sections above, weighs on both sides alike."""
    work = Path(tempfile.mkdtemp(prefix="nbflow-bench-pair-"))
    shell, session, clock = setup_shell(work, comm=True)
    cells = [typical_cell(i) for i in range(steps)]
    for c in cells:
        run(shell, c)
    target = cells[len(cells) // 2]
    comm = session.comm
    mirror = comm._mirror

    def attach(on: bool) -> None:
        hooks = (("pre_run_cell", comm._pre_run_cell), ("post_run_cell", comm._post_run_cell))
        for event, hook in hooks:
            (shell.events.register if on else shell.events.unregister)(event, hook)
        if on:
            mirror._unsubscribe = session.flow.events.subscribe(mirror._on_event, repeats=False)
        else:
            mirror.close()

    samples: dict[bool, list[float]] = {True: [], False: []}
    later: dict[bool, list[float]] = {True: [], False: []}
    attached = True
    for i in range(pairs):
        for on in ((True, False) if i % 2 else (False, True)):
            if on != attached:
                attach(on)
                attached = on
            src = edited(target)
            head, rest = src.split("\n", 1)
            total, io_s = magic_time(shell, session, clock, head[len("%%step "):], rest)
            samples[on].append(total - io_s)
            later[on].append(idle())
    if not attached:
        attach(True)
    diffs = [a - b for a, b in zip(samples[True], samples[False], strict=True)]
    idle_diffs = [a - b for a, b in zip(later[True], later[False], strict=True)]
    return {"with": statistics.median(samples[True]), "without": statistics.median(samples[False]),
            "diff": statistics.median(diffs), "idle_diff": statistics.median(idle_diffs)}


class _Info:
    def __init__(self, raw: str) -> None:
        self.raw_cell = raw
        self.cell_id = None


class _Result:
    def __init__(self, info: _Info) -> None:
        self.info = info
        self.success = True
        self.error_before_exec = self.error_in_exec = None
        self.result = None


def bench_status(steps: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="nbflow-bench-status-"))
    shell, session, clock = setup_shell(work)
    for i in range(steps):
        run(shell, typical_cell(i))
    times = [run(shell, "%flow status") for _ in range(20)]
    return {"status": statistics.median(times), "steps": float(len(session.flow.graph.steps))}


def bench_tax(steps: int, repeat: int) -> dict[str, float]:
    """A plain cell without nbflow, then with nbflow loaded and ``steps`` steps registered."""
    work = Path(tempfile.mkdtemp(prefix="nbflow-bench-tax-"))
    shell, session, _clock = setup_shell(work)
    with quiet():
        shell.run_cell("%unload_ext nbflow")
    plain = "x = seed + 1\ny = [x] * 3\n"
    without = [run(shell, plain) for _ in range(repeat)]
    shell, session, _clock = setup_shell(work)
    for i in range(steps):
        run(shell, typical_cell(i))
    with_nbflow = [run(shell, plain) for _ in range(repeat)]
    comm = session.comm
    assert comm is not None
    deferred = []
    for _ in range(max(repeat // 10, 10)):
        t = time.perf_counter()
        comm._refresh_after_cell()
        deferred.append(time.perf_counter() - t)
    return {"without": statistics.median(without), "with": statistics.median(with_nbflow),
            "deferred": statistics.median(deferred), "steps": float(steps)}


def report(title: str, r: dict[str, float], typical: bool = True) -> None:
    """``typical=False``: a worst case, reported against the baseline only (the 1 ms target is
    for a typical cell)."""
    print(f"{title} (the cell has {int(r['ancestors'])} ancestors), medians")
    line("baseline: the same code as a plain cell (shell.run_cell)", ms(r["baseline"]),
         f"by round: {ms(r['round_fast'])} to {ms(r['round_slow'])} (the machine's pace varies)")
    line("%%step cell, cache hit, whole cell (shell.run_cell)", ms(r["hit_whole"]),
         f"{r['hit_whole'] / r['baseline']:.1f}x baseline (the user code does not run)")
    for key, what in (("hit_own", "nbflow's own work, cache hit, cell re-run"),
                      ("first_own", "nbflow's own work, cache hit, first run in a kernel"),
                      ("miss_own", "nbflow's own work, cache miss (cell runs, is stored)")):
        ok = "OK" if r[key] <= 0.001 else "OVER"
        target = f"target <= 1 ms: {ok}; " if typical else ""
        line("  " + what, ms(r[key]),
             f"{target}{r[key] / r['baseline']:.1f}x baseline; min {ms(r[key + '_min'])}")
    line("  I/O excluded above (store, messages): hit / first run / miss",
         f"{r['hit_io'] * 1000:.2f}/{r['first_io'] * 1000:.2f}/{r['miss_io'] * 1000:.2f} ms")
    line("  all nbflow adds, I/O included: hit / first run / miss",
         f"{r['hit_all'] * 1000:.2f}/{r['first_all'] * 1000:.2f}/{r['miss_all'] * 1000:.2f} ms")
    line("  set aside until the kernel is idle: hit / first run / miss",
         f"{r['hit_idle'] * 1000:.2f}/{r['first_idle'] * 1000:.2f}/{r['miss_idle'] * 1000:.2f} ms",
         "(not on the cell's path)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps of the status notebook")
    parser.add_argument("--typical", type=int, default=20, help="steps of the typical notebook")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args(argv)
    import IPython

    print(f"nbflow notebook overhead — IPython {IPython.__version__}, Python "
          f"{sys.version.split()[0]}, in-process InteractiveShell with ipykernel's compiler; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (medians inflate under load)")
    print("A typical %%step cell: 8 lines, 2 step inputs, 2 globals, 2 outputs.")
    # a warm-up pass, not reported: whichever section ran first in a fresh process measured
    # 20-40% slower than the same section run later (the allocator's arenas, imports, the
    # memos of IPython and the interpreter) — a kernel has run many cells before the one timed
    bench_cells(args.typical, 20, comm=True, first_runs=2, rounds=2)
    report(f"1a. middle cell of a {args.typical}-step notebook, JupyterLab comm attached",
           bench_cells(args.typical, args.repeat, comm=True))
    report("1b. the same without the comm (core + adapter only)",
           bench_cells(args.typical, args.repeat, comm=False))
    deep = bench_cells(args.steps, max(args.repeat // 10, 20), comm=False, first_runs=5,
                       rounds=2)
    report(f"1c. worst case, not a typical cell: middle cell of a {args.steps}-step chain, no comm",
           deep, typical=False)
    per = (deep["hit_own"]) / deep["ancestors"]
    line("  => per ancestor whose key is checked", f"{per * 1e6:.1f} us")
    paired = bench_comm_paired(args.typical, args.repeat)
    print(f"1d. the comm's share of a miss, paired edit by edit in one shell ({args.repeat} pairs)")
    line("nbflow's own work, miss, comm attached / not", f"{ms(paired['with'])} / "
         f"{ms(paired['without'])}")
    line("  => the comm adds (median of the pairs' differences)", ms(paired["diff"]),
         "what 1a minus 1b shows beyond it is the machine's pace between sections")
    line("  => and once the kernel is idle (not on the cell's path)", ms(paired["idle_diff"]),
         "I/O included: the status message is packed and signed then")
    s = bench_status(args.steps)
    print(f"2. %flow status of a {int(s['steps'])}-step notebook (median of 20)")
    ok = "OK" if s["status"] <= 0.050 else "OVER"
    line("%flow status (whole cell, store lookups included)", ms(s["status"]),
         f"target <= 50 ms: {ok}")
    for n in (args.typical, args.steps):
        t = bench_tax(n, args.repeat)
        print(f"3. a plain cell with nbflow loaded and {n} steps registered, comm attached")
        tax = t["with"] - t["without"]
        line("plain cell, nbflow not loaded (baseline)", ms(t["without"]))
        line("plain cell, nbflow loaded", ms(t["with"]),
             f"tax {tax * 1000:+.3f} ms: target <= 1 ms: {'OK' if tax <= 0.001 else 'OVER'}")
        line("  deferred graph and status refresh once idle (not on the cell's path)", ms(t["deferred"]))
    return 0


async def _in_loop(argv: list[str] | None) -> int:
    return main(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(_in_loop(None)))
