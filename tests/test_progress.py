"""Runs you can follow: ``progress.json`` (written by the run, read by RunDir), each running run's rate and time
left, and the sweep's time left (``gapkit status``). The arithmetic runs on a fake clock: no assertion depends
on how fast this machine is."""

import json

import pytest

from gapkit.cli import main
from gapkit.distill import DistillSpec, run
from gapkit.distill.runfiles import ProgressMeter, RunDir, RunFolder
from gapkit.errors import ConfigError
from gapkit.sweep.plan import Node
from gapkit.sweep.status import RunStatus, format_duration, sweep_progress


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


# -- the record ------------------------------------------------------------------------------------
def test_the_rate_is_taken_over_the_recent_window_and_the_time_left_counts_from_the_last_update():
    clock = Clock(100.0)
    meter = ProgressMeter(0, 1000, launched_at=90.0, clock=clock)
    p = meter.record
    assert (p.step, p.resumed_from, p.build_s, p.steps_per_s, p.seconds_left(100.0)) == (0, 0, 10.0, None, None)
    for i in range(1, 21):  # 10 steps every 5 s: 2 steps/s
        clock.t += 5
        meter.at(10 * i)
    assert p.steps_per_s == pytest.approx(2.0) and p.step == 200 and p.updates == 20
    assert p.seconds_left(clock.t) == pytest.approx(800 / 2.0)
    assert p.seconds_left(clock.t + 100) == pytest.approx(300.0)  # counts down between updates
    assert p.seconds_left(clock.t + 10_000) == 0.0  # never below 0
    clock.t += 60  # an evaluation pause: the window (10 log steps) takes it in, not forever
    meter.at(210)
    assert p.steps_per_s == pytest.approx(100 / 105)
    for _ in range(10):
        clock.t += 5
        meter.at(p.step + 10)
    assert p.steps_per_s == pytest.approx(2.0)  # the pause has left the window
    assert p.mean_step_s == pytest.approx((clock.t - 100.0) / p.step)
    assert p.quiet_s(clock.t + 60) is None and p.quiet_s(clock.t + 600) == pytest.approx(600)
    meter.end(p.step)
    assert p.ended and p.seconds_left(clock.t) == 0.0


def test_a_resumed_run_counts_its_rate_from_where_it_resumed():
    clock = Clock(1000.0)
    meter = ProgressMeter(400, 1000, launched_at=990.0, clock=clock)
    clock.t += 50
    meter.at(500)
    p = meter.record
    assert p.resumed_from == 400 and p.steps_per_s == pytest.approx(2.0) and p.mean_step_s == pytest.approx(0.5)
    assert p.seconds_left(clock.t) == pytest.approx(250.0)


def test_the_run_folder_writes_the_record_and_run_dir_reads_it(tmp_path):
    clock = Clock(50.0)
    folder = RunFolder(tmp_path / "r")
    folder.dir.mkdir()
    assert RunDir(folder.dir).progress() is None
    folder.start_progress(0, 10, launched_at=40.0, clock=clock)
    clock.t = 55.0
    folder.log_progress(5, tokens_per_s=1234.0)
    read = RunDir(folder.dir).progress()
    assert read == folder.progress.record and (read.step, read.tokens_per_s, read.ended) == (5, 1234.0, False)
    assert not list(folder.dir.glob("*.tmp"))  # written atomically
    path = next(folder.dir.iterdir())
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"is not a readable progress record: the run rewrites it"):
        RunDir(folder.dir).progress()
    path.write_text(json.dumps({"step": 3}))
    with pytest.raises(ConfigError, match=r"is not a readable progress record"):
        RunDir(folder.dir).progress()


# -- a real run ------------------------------------------------------------------------------------
def spec_for(folder, max_steps=6):
    return DistillSpec(
        stage="finetune", student="2L-32H-4A", output_dir=str(folder),
        data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=16),
        train=dict(lr=1e-3, max_steps=max_steps, batch_size=16, log_every=1, eval_every=2, device="cpu"),
        weights=dict(relation=0, hard=1.0),
    )


def test_a_real_run_leaves_a_complete_record_and_a_resumed_one_says_where_it_resumed(tmp_path):
    class Stop(Exception):
        pass

    def stop_at_3(step, logs, model):
        if step == 3:
            raise Stop

    folder = tmp_path / "r"
    with pytest.raises(Stop):
        run(spec_for(folder), progress=False, callback=stop_at_3)
    run_dir = RunDir(folder)
    p = run_dir.progress()
    assert run_dir.status().state == "interrupted"
    assert (p.step, p.total_steps, p.resumed_from, p.ended) == (3, 6, 0, False) and p.steps_per_s > 0
    assert p.launched_at <= p.started_at <= p.updated_at
    run(spec_for(folder), resume=True, progress=False)
    p = run_dir.progress()
    assert (p.step, p.total_steps, p.resumed_from, p.ended, p.updates) == (6, 6, 2, True, 4)  # from checkpoint 2
    assert p.seconds_left(p.updated_at) == 0.0 and p.mean_step_s > 0
    assert run_dir.status().state == "done"


# -- the sweep's time left -------------------------------------------------------------------------
def node(i, student="1L-16H-4A", seed=0, deps=()):
    return Node(id=f"n{i}", kind="task", config={}, deps=list(deps),
                meta=dict(role="student", teacher="t", student=student, method="minilm", task="synthetic", seed=seed))


def record(out, n, *, pid, launched, started, steps, total, rate_s_per_step, resumed_from=0, ended=False):
    """A progress record in ``n``'s folder: ``steps`` steps from ``resumed_from``, one log step each, at a
    constant ``rate_s_per_step``, from ``started``."""
    clock = Clock(started)
    folder = RunFolder(n.folder(out))
    folder.dir.mkdir(parents=True)
    folder.start_progress(resumed_from, total, launched_at=launched, clock=clock)
    folder.progress.record.pid = pid
    for step in range(resumed_from + 1, resumed_from + steps + 1):
        clock.t += rate_s_per_step
        folder.log_progress(step)
    if ended:
        folder.progress.end(folder.progress.record.step)
        folder._write_progress()
    return folder.progress.record


def states(*names):
    return [RunStatus(s) for s in names]


def test_the_sweeps_time_left_sums_the_work_left_over_the_processes(tmp_path):
    out = tmp_path
    done, running, pending, interrupted = node(0), node(1, seed=1), node(2, seed=2), node(3, seed=3)
    # a finished run of the same shape: 10 s to build, 100 steps at 1 s a step: 110 s
    record(out, done, pid=1, launched=0, started=10, steps=100, total=100, rate_s_per_step=1.0, ended=True)
    # running: 40/100 steps at 0.5 s a step (2 steps/s), last update at 1020
    record(out, running, pid=2, launched=995, started=1000, steps=40, total=100, rate_s_per_step=0.5)
    # interrupted at 50/100 at 1 s a step, 10 s to build
    record(out, interrupted, pid=3, launched=0, started=10, steps=50, total=100, rate_s_per_step=1.0)
    nodes = [done, running, pending, interrupted]
    sp = sweep_progress(nodes, states("done", "running", "pending", "interrupted"), out, {"kind": "local"},
                        now=1030.0)
    assert sp.runs["n1"].seconds_left == pytest.approx(60 / 2 - 10) and sp.runs["n1"].basis == "rate"
    assert sp.runs["n2"].seconds_left == pytest.approx(110.0) and sp.runs["n2"].basis == "alike"
    assert sp.runs["n3"].seconds_left == pytest.approx(10 + 50 * 1.0) and sp.runs["n3"].basis == "own"
    # one process trains now: (20 + 110 + 60) / 1
    assert sp.seconds_left == pytest.approx(190.0)
    assert "1 running at their recent rates" in sp.how and "over 1 process training runs now" in sp.how
    assert sp.sentence() == f"sweep time left: about {format_duration(190.0)} ({sp.how})"
    assert sp.detail("n1") == "step 40/100, 2 steps/s, 20 s left"
    assert sp.detail("n3").startswith("stopped at step 50/100, last progress")


def test_a_group_counts_once_and_its_finished_runs_share_their_process(tmp_path):
    out = tmp_path
    a, b, c, d = node(0), node(1, seed=1), node(2, seed=2), node(3, seed=3)
    # a and b trained together in one process (a group): 100 steps at 2 s a group step, 10 s build each
    record(out, a, pid=7, launched=0, started=10, steps=100, total=100, rate_s_per_step=2.0, ended=True)
    record(out, b, pid=7, launched=0, started=10, steps=100, total=100, rate_s_per_step=2.0, ended=True)
    # c and d run together now (the last update of both at 570): the group ends when its longest run does
    record(out, c, pid=8, launched=500, started=510, steps=20, total=100, rate_s_per_step=3.0)
    record(out, d, pid=8, launched=500, started=510, steps=60, total=100, rate_s_per_step=1.0)
    e = node(4, seed=4)
    sp = sweep_progress([a, b, c, d, e], states("done", "done", "running", "running", "pending"), out,
                        {"kind": "inline"}, now=570.0)
    assert sp.runs["n2"].seconds_left == pytest.approx(80 * 3.0) and sp.runs["n3"].seconds_left == pytest.approx(40)
    assert sp.runs["n4"].seconds_left == pytest.approx(10 + 2.0 * 100 / 2)  # its share of the group's time
    assert sp.seconds_left == pytest.approx(240 + 110)


def test_the_time_left_is_unknown_when_a_pending_run_has_nothing_like_it(tmp_path):
    out = tmp_path
    done, other = node(0), node(1, student="2L-64H-4A")
    record(out, done, pid=1, launched=0, started=10, steps=10, total=10, rate_s_per_step=1.0, ended=True)
    sp = sweep_progress([done, other], states("done", "pending"), out, {"kind": "inline"}, now=100.0)
    assert sp.seconds_left is None and sp.runs["n1"].basis == "unknown"
    assert sp.sentence().startswith("sweep time left: unknown (1 pending run(s) have nothing to time them by yet")


def test_the_parallelism_is_never_invented(tmp_path):
    out = tmp_path
    done, pending = node(0), node(1, seed=1)
    record(out, done, pid=1, launched=0, started=10, steps=10, total=10, rate_s_per_step=1.0, ended=True)
    sts = states("done", "pending")
    assert sweep_progress([done, pending], sts, out, {"kind": "inline"}, now=100.0).seconds_left == pytest.approx(20)
    assert sweep_progress([done, pending], sts, out, {"kind": "local", "workers": 2},
                          now=100.0).seconds_left == pytest.approx(10)
    slurm = sweep_progress([done, pending], sts, out, {"kind": "slurm"}, now=100.0)
    assert slurm.seconds_left is None and "20 s of run time left" in slurm.how and "how many run at once" in slurm.how


def test_runs_that_cannot_run_and_a_finished_sweep_leave_nothing(tmp_path):
    out = tmp_path
    failed, after = node(0), node(1, deps=["n0"])
    sp = sweep_progress([failed, after], states("failed", "pending"), out, {"kind": "inline"}, now=1.0)
    assert sp.seconds_left == 0.0 and sp.runs == {} and sp.sentence() == "sweep time left: none (nothing left to run)"


def test_a_running_run_before_its_first_step_is_starting(tmp_path):
    out = tmp_path
    n = node(0)
    sp = sweep_progress([n], states("running"), out, {"kind": "inline"}, now=1.0)
    assert sp.detail("n0").startswith("starting") and sp.seconds_left is None
    record(out, n, pid=1, launched=0, started=5, steps=0, total=10, rate_s_per_step=1.0)
    sp = sweep_progress([n], states("running"), out, {"kind": "inline"}, now=6.0)
    assert sp.detail("n0") == "step 0/10, starting (no step logged yet)"


# -- gapkit status ---------------------------------------------------------------------------------
def test_gapkit_status_shows_the_running_runs_and_the_sweeps_time_left(tmp_path, capsys):
    import time

    from test_sweep import tiny
    from gapkit.sweep import SweepSpec, run_sweep

    spec = SweepSpec(**tiny(tmp_path / "out", methods=["minilm"]))
    report = run_sweep(spec, progress=False, log=lambda *_: None)
    assert report.ok
    tasks = [n for n in report.nodes if n.kind == "task"]
    assert len(tasks) >= 2
    busy, dead = (RunDir(n.folder(spec.output_dir)) for n in tasks[:2])
    now = time.time()
    for i, r in enumerate((busy, dead)):  # made unfinished: resumed at 200, 10 steps in 20 s, 990 to go
        r.result_file.unlink()
        folder = RunFolder(r.dir)
        clock = Clock(now - 20)
        folder.start_progress(200, 1200, launched_at=now - 30, clock=clock)
        folder.progress.record.pid = 99 + i  # two processes
        clock.t = now
        folder.log_progress(210)
    holder = RunFolder(busy.dir)
    holder.acquire()  # a live process holds it: running
    try:
        assert main(["status", spec.output_dir]) == 0
    finally:
        holder.release()
    out = capsys.readouterr().out
    assert "1 running, 1 interrupted" in out
    assert f"running  {tasks[0].id}: step 210/1200, 0.5 steps/s, 33 min left; resumed at step 200" in out
    assert f"interrupted {tasks[1].id}: stopped at step 210/1200" in out
    # 1980 s left for the running one (less the second or so since); the interrupted one at its own mean step
    # time (20 s for 10 steps) plus its build (10 s): 990 * 2 + 10; over the one process training now: 66 min
    assert "sweep time left: about 66 min (1 running at their recent rates; 1 interrupted at their own step " \
           "times; over 1 process training runs now)" in out
