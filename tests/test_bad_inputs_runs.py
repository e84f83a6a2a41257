"""Bad run folders as data: what a sweep's folders can hold that gapkit must not take for a result, and the
one sentence it answers with (the pattern of tests/test_bad_inputs.py, for run folders and sweeps).

Three tables, all on a planned (untrained) sweep whose run folders are written by hand through
:class:`gapkit.distill.runfiles.RunFolder`:
- ``STATUS``: where :func:`gapkit.sweep.status.node_status` must answer a state other than ``done``, with a
  one-line reason matching the pattern (``gapkit status`` prints the same);
- ``CLI``: ``gapkit ...`` command lines that must exit with status 2 and print exactly one line
  ``gapkit: error: ...``, without a traceback, and change no file;
- ``API``: Python calls that must raise the case's exception with a one-line message.

Each setup breaks one thing of a run that would otherwise be ``done`` (``test_a_good_run_is_done`` is the
control).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest

from gapkit.cli import main
from gapkit.distill.result import RunResult, run_id
from gapkit.distill.runfiles import RunDir, RunFolder
from gapkit.errors import ConfigError
from gapkit.sweep import SweepSpec, build_table, plan, run_sweep
from gapkit.sweep.plan import plan_json
from gapkit.sweep.status import FailureRecords, node_status


def _sweep(out: Path) -> dict:
    return dict(
        name="bad", output_dir=str(out),
        tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=32)],
        teachers=[dict(family="scratch", shapes=["1L-32H-4A"])], students=dict(shapes=["1L-16H-4A"]),
        methods=["kd"], budgets=dict(all=dict(lr=3e-3, max_steps=3, batch_size=16, eval_every=3, device="cpu")),
        seeds=[0])


class Sweep:
    """A planned sweep in ``tmp/sweep`` (plan.json written, nothing trained); ``node`` is its last run."""

    def __init__(self, tmp: Path):
        self.out = tmp / "sweep"
        self.file = tmp / "sweep.yaml"
        self.file.write_text(json.dumps(_sweep(self.out)))  # JSON is YAML
        self.spec = SweepSpec(**_sweep(self.out))
        self.nodes = plan(self.spec)
        self.node = self.nodes[-1]
        self.out.mkdir(parents=True)
        (self.out / "plan.json").write_text(plan_json(self.nodes, self.spec))

    @property
    def run(self) -> RunDir:
        return RunDir(self.node.folder(self.out))

    def finished(self, change: Callable[[dict], None] | None = None, result: bool = True, node=None) -> None:
        """Write ``node``'s run as the executor would leave it, its recorded config first edited by ``change``."""
        node = node or self.node
        spec = node.spec()
        config = json.loads(spec.to_json())
        if change is not None:
            change(config)
        folder = RunFolder(node.folder(self.out))
        folder.start(json.dumps(config, indent=2), wipe=False)
        if result:
            folder.write_result(RunResult(
                run_dir=str(folder.dir), name=spec.name, run_id=run_id(config), status="completed", stage=spec.stage,
                task=spec.data.task, steps=3, selection=dict(split="dev", metric="score", higher_is_better=True),
                metrics=[dict(split="dev", metric="score", value=60.0, step=3, model="best")]))
        folder.close()


def result_file(text: str):
    """A finished run whose result file is then replaced by ``text``."""
    def setup(s: Sweep) -> None:
        s.finished()
        s.run.result_file.write_text(text)
    return setup


def config_file(text: str):
    def setup(s: Sweep) -> None:
        s.finished()
        s.run.config_file.write_text(text)
    return setup


def failure_record(text: str):
    """A failure record of the sweep for a run that never wrote a result."""
    def setup(s: Sweep) -> None:
        path = FailureRecords(s.out).path(s.node.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return setup


def changed(key: str, value=None, drop: bool = False, result: bool = True):
    """A run whose recorded config differs from the plan's at ``key`` (dotted): another value, or absent (the
    config of an older gapkit, before that setting existed)."""
    def change(config: dict) -> None:
        *parents, last = key.split(".")
        d = config
        for p in parents:
            d = d[p]
        if drop:
            del d[last]
        else:
            d[last] = value

    return lambda s: s.finished(change, result=result)


# ----------------------------------------------------------------------------------------------------
# STATUS: what node_status must answer
# ----------------------------------------------------------------------------------------------------
def status(id: str, setup, state: str, pattern: str):
    return pytest.param(setup, state, pattern, id=id)


STATUS = [
    status("result:empty-object", result_file("{}"), "failed",
           r"result\.json is not a readable gapkit result \(it lacks run_id, status, metrics\): move the folder away "
           r"and rerun\.$"),
    status("result:not-json", result_file("{garbage"), "failed", r"result\.json is not a readable gapkit result"),
    status("result:a-list", result_file("[]"), "failed", r"result\.json is not a readable gapkit result \(it holds a "
                                                           r"JSON list, not a result object\)"),
    status("result:old-schema", result_file(json.dumps(dict(run_id="x", status="completed", metrics=[], schema=1))),
           "failed", r"result schema 1 is not gapkit's current one \(2\)"),
    status("config:not-json", config_file("{"), "failed", r"config\.json is not valid JSON \(a corrupt run folder\)"),
    status("failures:not-json", failure_record("{not json"), "failed",
           r"^The sweep's failure record .*failures/.*\.json is not readable JSON: the run failed for a reason now "
           r"lost; rerunning the sweep tries it again\.$"),
    status("failures:a-list", failure_record("[1, 2]"), "failed", r"failure record .* is not readable JSON"),
    status("stale:changed-value", changed("train.lr", 0.001), "stale",
           r"holds a run of another config \(train\.lr: 0\.001 here, 0\.003 now\): results are never overwritten, so "
           r"move that folder aside \(or choose a new output_dir\) to run this config\.$"),
    status("stale:older-gapkit-without-a-setting", changed("weights.temperature", drop=True), "stale",
           r"\(weights\.temperature: absent here, .* now\)"),
    status("stale:unfinished", changed("train.max_steps", 5, result=False), "stale",
           r"\(train\.max_steps: 5 here, 3 now\)"),
]


@pytest.mark.parametrize("setup, state, pattern", STATUS)
def test_a_bad_run_folder_is_answered_in_one_sentence(setup, state, pattern, tmp_path):
    s = Sweep(tmp_path)
    setup(s)
    got, reason = node_status(s.node, s.out)
    assert got == state, reason
    assert reason is not None and "\n" not in reason and re.search(pattern, reason), reason


def test_a_good_run_is_done(tmp_path):
    """The control of the table above: the same run, nothing broken."""
    s = Sweep(tmp_path)
    assert node_status(s.node, s.out) == ("pending", None)
    s.finished()
    assert node_status(s.node, s.out) == ("done", None)
    assert s.run.status() == ("done", None) and s.run.changes(s.node.spec().to_dict()) == []


def test_gapkit_status_shows_stale_and_failed_runs_with_their_sentence(tmp_path, capsys):
    s = Sweep(tmp_path)
    changed("train.lr", 0.001)(s)
    teacher = s.nodes[0]
    failure_record("{not json")(_Other(s, teacher))
    assert main(["status", str(s.out)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"0/2 done, 0 running, 0 interrupted, 1 stale, 1 failed, 0 pending", out), out
    assert re.search(rf"stale +{s.node.id}: .*train\.lr: 0\.001 here, 0\.003 now", out), out
    assert re.search(rf"failed +{teacher.id}: The sweep's failure record .* is not readable JSON", out), out


class _Other:
    """A Sweep seen with another node as its ``node``."""

    def __init__(self, s: Sweep, node):
        self.out, self.node = s.out, node


# ----------------------------------------------------------------------------------------------------
# CLI: exit status 2, one line, nothing changed
# ----------------------------------------------------------------------------------------------------
def cli(id: str, args: list[str], setup, pattern: str):
    return pytest.param(args, setup, pattern, id=id)


CLI = [
    cli("results:empty-result", ["results", "{out}"], result_file("{}"),
        r"result\.json is not a readable gapkit result \(it lacks run_id, status, metrics\)"),
    cli("results:corrupt-result", ["results", "{out}"], result_file("\x00\x01"),
        r"result\.json is not a readable gapkit result"),
    cli("sweep:stale-run", ["sweep", "{file}", "--quiet"], changed("train.lr", 0.001),
        r"^gapkit: error: Sweep bad: .* holds a run of another config \(train\.lr: 0\.001 here, 0\.003 now\): .*"
        r"move that folder aside \(or choose a new output_dir\) to run this config\.$"),
    cli("sweep:stale-run-of-an-older-gapkit", ["sweep", "{file}", "--quiet"],
        changed("weights.temperature", drop=True), r"weights\.temperature: absent here"),
]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, setup, pattern", CLI)
def test_cli_bad_run_folder_is_one_sentence(args, setup, pattern, tmp_path, capsys):
    s = Sweep(tmp_path)
    setup(s)
    before = _files(tmp_path)
    capsys.readouterr()
    code = main([a.replace("{out}", str(s.out)).replace("{file}", str(s.file)) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("gapkit: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert _files(tmp_path) == before, "a refused command must change no file (a finished result above all)"


# ----------------------------------------------------------------------------------------------------
# API: one exception, one line
# ----------------------------------------------------------------------------------------------------
def api(id: str, call, setup, exc: type[Exception], pattern: str):
    return pytest.param(call, setup, exc, pattern, id=id)


API = [
    api("RunDir.result:empty", lambda s: s.run.result(), result_file("{}"), ConfigError,
        r"result\.json is not a readable gapkit result \(it lacks run_id, status, metrics\)"),
    api("RunDir.config:corrupt", lambda s: s.run.config(), config_file("{"), ConfigError,
        r"config\.json is not valid JSON"),
    api("RunDir.failure:corrupt", lambda s: s.run.failure(),
        lambda s: (s.finished(), s.run.failure_file.write_text("nan?")), ConfigError,
        r"failure\.json is not a readable failure record \(not a JSON object\)"),
    api("build_table:empty-result", lambda s: build_table(s.out), result_file("{}"), ConfigError,
        r"result\.json is not a readable gapkit result"),
    api("run_sweep:stale-run", lambda s: run_sweep(s.spec, progress=False, log=lambda *a: None),
        changed("train.lr", 0.001), ConfigError, r"^Sweep bad: .*holds a run of another config \(train\.lr"),
]


@pytest.mark.parametrize("call, setup, exc, pattern", API)
def test_api_bad_run_folder_is_one_sentence(call, setup, exc, pattern, tmp_path):
    s = Sweep(tmp_path)
    setup(s)
    before = _files(tmp_path)
    with pytest.raises(exc) as err:
        call(s)
    message = str(err.value)
    assert "\n" not in message and re.search(pattern, message), message
    assert _files(tmp_path) == before


def test_a_corrupt_failure_record_is_cleared_and_the_run_tried_again(tmp_path, monkeypatch):
    """run_sweep: a failure record it cannot read is no reason to stop; the node runs again (here: the
    executor is replaced by one that records what it was given)."""
    from gapkit.sweep import execute

    s = Sweep(tmp_path)
    failure_record("{not json")(_Other(s, s.nodes[0]))
    submitted = []

    class Recorder(execute.InlineExecutor):
        def submit_all(self, units):
            submitted.extend(i for u in units for i in u.node_ids)
            return [execute._Done([dict(run_dir="", status="failed", reason="not run in this test")]
                                  * len(u.node_ids)) for u in units]

    monkeypatch.setattr(execute, "make_executor", lambda spec, kind=None: Recorder())
    report = run_sweep(s.spec, progress=False, log=lambda *a: None)
    assert submitted[0] == s.nodes[0].id
    assert report.status[s.nodes[0].id] == ("failed", "not run in this test")
