"""Fault injection: real ``gapkit distill`` processes SIGKILLed at many instants (inside checkpoint
writes, between the two renames of a folder swap, after a log append, before the result ...) and
resumed each time end with exactly the files of an uninterrupted run: weights, ``metrics.jsonl``,
``routing.parquet``, ``best/`` and ``result.json`` (timing fields aside), no duplicate or missing row.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

CONFIG = dict(
    stage="finetune", student="2L-32H-4A-1,4E",
    data=dict(task="synthetic", max_len=24, max_train_examples=192, max_eval_examples=48),
    train=dict(lr=2e-3, max_steps=24, batch_size=16, eval_every=4, checkpoint_every=1, log_every=1, routing_every=1,
               device="cpu"),
    weights=dict(relation=0, hard=1.0),
)

# Die the n-th time the process passes a point (gapkit.io.kill_point), at the first listed point it
# reaches; "random" kills at an instant nobody chose. Each process gets a little further than the last.
PLAN = [
    "config.json.tmp:1", "step:1", "checkpoint.written:1", "checkpoint.between:2", "random",
    "metrics.appended:3", "routing.parquet.tmp:2", "checkpoint.between:1", "metrics.jsonl.tmp:1",
    "best.written:1,step:5", "random", "step:2", "best.between:1,checkpoint.between:4", "checkpoint.written:2",
    "routing.parquet.tmp:1", "random", "checkpoint.between:2", "metrics.appended:1", "best.between:1,step:4",
    "random", "routing.parquet.tmp:3", "metrics.appended:4", "checkpoint.written:3", "step:2",
    "routing.parquet.tmp:2", "checkpoint.between:2", "finish:1", "result.json.tmp:1",
]



def each_point_once(plan: list[str]) -> list[str]:
    """The kill points of ``plan`` that name a point (or the random instant) not named before: every kind of
    instant once, in the default run; the whole plan runs with ``-m slow``."""
    seen, out = set(), []
    for kill_at in plan:
        names = {point.split(":")[0] for point in kill_at.split(",")}
        if names - seen:
            out.append(kill_at)
            seen |= names
    return out


def plans(plan: list[str], least: int):
    """(kill points, the kills they must make) for the default run and, marked slow, every point."""
    quick = each_point_once(plan)
    return [pytest.param(quick, len(quick) - 3, id="each-point-once"),
            pytest.param(plan, least, id="every-point", marks=pytest.mark.slow)]


class Launcher:
    """Starts ``gapkit distill`` processes through tests/kill_zygote.py (import once, fork per run)."""

    def __init__(self, tmp: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
        env.pop("GAPKIT_KILL_AT", None)
        self.env, self.tmp, self.count = env, tmp, 0
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("kill_zygote.py"))], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, folder: Path, kill_at: str | None = None, args: list[str] | None = None) -> int:
        """Start one run (``--resume`` once the folder has a config), or the command ``args``; returns its pid."""
        env = dict(self.env, **({"GAPKIT_KILL_AT": kill_at} if kill_at else {}))
        resume = ["--resume"] if (folder / "config.json").exists() else []
        self.count += 1
        self.log = self.tmp / f"log{self.count}.txt"
        args = args or ["distill", str(folder.with_suffix(".yaml")), "--quiet", *resume]
        request = dict(args=args, env=env, log=str(self.log))
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        rc = json.loads(self.proc.stdout.readline())["rc"]
        assert rc in (0, -signal.SIGKILL), self.log.read_text()[-3000:]
        return rc

    def run(self, folder: Path, kill_at: str | None = None, args: list[str] | None = None) -> int:
        self.start(folder, kill_at, args)
        return self.wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _write_config(folder: Path) -> None:
    folder.with_suffix(".yaml").write_text(yaml.safe_dump(dict(CONFIG, output_dir=str(folder), name="kill")))


def _files(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    for timing in ("wall_time_s", "run_dir", "git_revision"):  # where and when, not what
        result.pop(timing)
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return dict(
        weights=load_file(folder / "checkpoint" / "model.safetensors"),
        best=load_file(folder / "best" / "model.safetensors"),
        best_config=json.loads((folder / "best" / "config.json").read_text()),
        metrics=[m for m in metrics if m["metric"] != "tokens_per_s"],
        routing=pd.read_parquet(folder / "routing.parquet"),
        result=result,
        leftovers=sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old"))),
    )


@pytest.mark.parametrize("plan, least", plans(PLAN, 20))
def test_sigkill_at_any_instant_resumes_to_the_uninterrupted_files(tmp_path, plan, least):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _write_config(ref)
    _write_config(cut)
    launcher = Launcher(tmp_path)
    try:
        assert launcher.run(ref) == 0
        kills, rng, trace = 0, random.Random(0), []
        first_step_s = None  # how long a launch takes to reach its first step here (startup and resume)
        for kill_at in plan:
            t0 = time.monotonic()
            if kill_at == "random":
                # An instant between early startup and a few steps in. The sleep only picks the instant: a
                # launch also dies at its second step, so how far it gets never depends on the machine's
                # speed (a launch that ran to the end on a suddenly idle machine would leave the points
                # after it nothing to kill, and the count below short).
                pid = launcher.start(cut, "step:2")
                time.sleep(rng.uniform(0.3, 1.2) * first_step_s)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended first
                    pass
                rc = launcher.wait()
            else:
                rc = launcher.run(cut, kill_at)
                if not kill_at.startswith("config.json.tmp"):
                    # The fastest launch-to-kill seen so far bounds how long a launch takes to get into its
                    # steps on this machine now. A slow first launch (a busy machine) must not set a window
                    # in which later, faster launches run most of the steps before a random kill.
                    elapsed = time.monotonic() - t0
                    first_step_s = elapsed if first_step_s is None else min(first_step_s, elapsed)
            kills += rc == -signal.SIGKILL
            trace.append((kill_at, rc, _step_of(cut)))
        while not (cut / "result.json").exists():
            assert launcher.run(cut) == 0
    finally:
        launcher.close()
    assert kills >= least, "\n".join(map(str, trace))

    a, b = _files(ref), _files(cut)
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for k in a["best"]:
        assert torch.equal(a["best"][k], b["best"][k]), k
    assert a["best_config"] == b["best_config"]
    assert a["metrics"] == b["metrics"]  # no duplicate, no missing row
    steps = [(m["step"], m["split"], m["metric"]) for m in b["metrics"]]
    assert len(steps) == len(set(steps))
    pd.testing.assert_frame_equal(a["routing"], b["routing"])
    assert a["result"] == b["result"] and b["result"]["steps"] == CONFIG["train"]["max_steps"]
    assert a["leftovers"] == b["leftovers"] == []


def _step_of(folder: Path) -> int | None:
    state = folder / "checkpoint" / "state.json"
    return json.loads(state.read_text())["step"] if state.exists() else None
