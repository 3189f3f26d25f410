"""Flow scripts on the command line, in real subprocesses: the guide's flows print what Metaflow's
do; run --help, show, bad input; caching per item across processes (a log each task appends to);
resume after an injected failure; --max-workers gives the serial results; past runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "flows"


def cli(script: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH", "")) if p)
    full.pop("NBFLOW_STORE", None)
    full.update(env)
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(
    "name,args,stdout",
    [
        ("linear", [], "the data artifact is: hello world\nthe data artifact is still: hello world\n"),
        ("branch", [], "a is 1\nb is 2\ntotal is 3\n"),
        ("foreach", [], "Stranger Things processed\nHouse of Cards processed\nNarcos processed\n"),
        ("merge_artifacts", [], "x is 1\npass_down is a\ncommon is 5\nfrom_a is 6\n"
                                "Only pass_down and common exist here\n"),
        ("parameter_flow", [], "alpha is 0.010000\nalpha is still 0.010000\n"),
        ("parameter_flow", ["--alpha", "0.6"], "alpha is 0.600000\nalpha is still 0.600000\n"),
        ("required_parameter_flow", ["--num_components", "3"], "components: [0, 1, 2]\n"),
        ("json_parameter_flow", [], "The GDP of US is $1939B\n"),
        ("json_parameter_flow", ["--gdp", '{"US": 1}'], "The GDP of US is $1B\n"),
    ],
)
def test_guide_flows(tmp_path: Path, name: str, args: list[str], stdout: str) -> None:
    done = cli(EXAMPLES / f"{name}.py", "run", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == stdout
    assert "[start] done" in done.stderr and done.stderr.rstrip().endswith("done")
    assert (tmp_path / ".nbflow").is_dir()  # the default store: ./.nbflow


def test_help_show_and_bad_input(tmp_path: Path) -> None:
    help_ = cli(EXAMPLES / "json_parameter_flow.py", "run", "--help", cwd=tmp_path)
    assert help_.returncode == 0
    text = " ".join(help_.stdout.split())
    assert '--gdp JSON Country-GDP Mapping [default: {"US": 1939}]' in text
    assert "--country STR Choose a country [default: US]" in text
    assert "--max-workers N" in text and "--store PATH" in text
    required = cli(EXAMPLES / "required_parameter_flow.py", "run", "--help", cwd=tmp_path)
    assert "--num_components INT Number of components [required]" in " ".join(required.stdout.split())

    show = cli(EXAMPLES / "foreach.py", "show", cwd=tmp_path)
    assert show.returncode == 0
    assert "Step start\n    Choose the titles.\n    => a  (foreach over titles)" in show.stdout
    assert "Step join  (join)\n    Collect every task's title.\n    => end" in show.stdout

    bad = cli(EXAMPLES / "parameter_flow.py", "run", "--alpha", "fast", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "argument --alpha: parameter 'alpha' expects a number, got 'fast' from --alpha" in bad.stderr
    missing = cli(EXAMPLES / "required_parameter_flow.py", "run", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "parameter 'num_components' is required; pass --num_components INT" in missing.stderr
    json_bad = cli(EXAMPLES / "json_parameter_flow.py", "run", "--gdp", "{US: 1}", cwd=tmp_path)
    assert json_bad.returncode == 2 and "parameter 'gdp' expects JSON" in json_bad.stderr
    assert not (tmp_path / ".nbflow" / "records").exists()  # nothing ran


def test_graph_errors_exit_before_running(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(textwrap.dedent("""
        from nbflow import FlowSpec, step

        class Broken(FlowSpec):
            @step
            def start(self):
                self.next(self.a, self.b)

            @step
            def a(self):
                self.next(self.join)

            @step
            def b(self):
                self.next(self.join)

            @step
            def join(self):
                self.next(self.end)

            @step
            def end(self):
                pass

        if __name__ == "__main__":
            Broken()
    """))
    done = cli(script, "run", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("error: branches from a, b meet at step 'join', so it must be a join: "
            "def join(self, inputs)") in done.stderr
    assert cli(script, "check", cwd=tmp_path).returncode == 1


FLOW = """
import os
from nbflow import FlowSpec, Parameter, step

LOG = os.environ["FLOW_LOG"]


def log(msg):
    with open(LOG, "a") as f:
        f.write(msg + "\\n")


class Items(FlowSpec):
    \"\"\"Items through a foreach, with a step that can be made to fail.\"\"\"

    scale = Parameter("scale", default=1, help="multiplier")

    @step
    def start(self):
        log("start")
        self.titles = TITLES
        self.next(self.a, foreach="titles")

    @step
    def a(self):
        log("a:" + self.input)
        if os.environ.get("FLOW_FAIL") == self.input:
            raise RuntimeError("injected failure on " + self.input)
        self.v = self.input.lower() * self.scale
        self.next(self.join)

    @step
    def join(self, inputs):
        log("join")
        self.results = [i.v for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        log("end")
        print(" ".join(self.results))


if __name__ == "__main__":
    Items()
"""


def write_flow(path: Path, titles: list[str]) -> Path:
    path.write_text(FLOW.replace("TITLES", repr(titles)))
    return path


def take_log(path: Path) -> list[str]:
    lines = path.read_text().split() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_per_item_caching_across_processes(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    script = write_flow(tmp_path / "items.py", ["X", "Y", "Z"])
    first = cli(script, "run", cwd=tmp_path, FLOW_LOG=str(log))
    assert first.returncode == 0, first.stderr
    assert first.stdout == "x y z\n"
    assert take_log(log) == ["start", "a:X", "a:Y", "a:Z", "join", "end"]
    assert "[a] done 3 tasks (3 ran, 0 cached)" in first.stderr
    again = cli(script, "run", cwd=tmp_path, FLOW_LOG=str(log))
    assert again.returncode == 0 and take_log(log) == []
    assert "[a] cached" in again.stderr
    write_flow(script, ["X", "Q", "Z"])
    edited = cli(script, "run", cwd=tmp_path, FLOW_LOG=str(log))
    assert edited.stdout == "x q z\n"
    assert take_log(log) == ["start", "a:Q", "join", "end"]
    assert "[a] done 3 tasks (1 ran, 2 cached)" in edited.stderr
    scaled = cli(script, "run", "--scale", "2", cwd=tmp_path, FLOW_LOG=str(log))
    assert scaled.stdout == "xx qq zz\n"
    assert take_log(log) == ["a:X", "a:Q", "a:Z", "join", "end"]  # start does not read scale


def test_resume_after_an_injected_failure(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    script = write_flow(tmp_path / "items.py", ["X", "Y", "Z"])
    failed = cli(script, "run", "--scale", "3", cwd=tmp_path, FLOW_LOG=str(log), FLOW_FAIL="Y")
    assert failed.returncode == 1
    assert "RuntimeError: injected failure on Y" in failed.stderr
    assert 'items.py", line' in failed.stderr  # the user's own frame, first
    assert "step 'a' failed" in failed.stderr and "resume" in failed.stderr
    assert "[join] skipped" in failed.stderr
    assert take_log(log) == ["start", "a:X", "a:Y"]

    resumed = cli(script, "resume", cwd=tmp_path, FLOW_LOG=str(log))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stderr and "from step 'a' (reusing start)" in resumed.stderr
    assert resumed.stdout == "xxx yyy zzz\n"  # the failed run's parameters
    assert take_log(log) == ["a:Y", "a:Z", "join", "end"]

    again = cli(script, "resume", cwd=tmp_path, FLOW_LOG=str(log))
    assert again.returncode == 0 and "nothing to resume" in again.stderr
    from_join = cli(script, "resume", "join", cwd=tmp_path, FLOW_LOG=str(log))
    assert from_join.returncode == 0 and take_log(log) == ["join"]

    runs = cli(script, "runs", cwd=tmp_path, FLOW_LOG=str(log))
    lines = runs.stdout.splitlines()
    assert len(lines) == 3 and "done" in lines[0] and "failed" in lines[2]
    assert all("scale=3" in line for line in lines)


def test_max_workers_equals_serial(tmp_path: Path) -> None:
    (tmp_path / "serial").mkdir()
    (tmp_path / "parallel").mkdir()
    script = EXAMPLES / "foreach.py"
    serial = cli(script, "run", cwd=tmp_path / "serial")
    parallel = cli(script, "run", "--max-workers", "2", cwd=tmp_path / "parallel")
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr
    assert parallel.stdout == serial.stdout
    reader = tmp_path / "read.py"
    reader.write_text(textwrap.dedent("""
        import json, nbflow
        run = nbflow.Flow("ForeachFlow").latest_run
        out = {s: run[s].manifest().digest(s) for s in run.steps}
        out["results"] = run.data.results
        out["titles"] = [t.data.title for t in run["a"]]
        out["executor"] = run.meta["executor"]
        print(json.dumps(out))
    """))
    a = json.loads(cli(reader, cwd=tmp_path / "serial").stdout)
    b = json.loads(cli(reader, cwd=tmp_path / "parallel").stdout)
    assert a.pop("executor") == "serial" and b.pop("executor").startswith("local (2")
    assert a == b and a["results"][0] == "Stranger Things processed"
