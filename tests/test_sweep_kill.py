"""A sweep process SIGKILLed at many instants (inside a group's steps and checkpoints, between a
folder's renames, while the plan or the table is written, at random) and started again each time
ends with the uninterrupted sweep's table: no partial, missing or duplicate row."""

import os
import random
import signal
import time
from pathlib import Path

import yaml
import pandas as pd
import pytest

from gapkit.sweep import build_table
from test_kill import Launcher, plans
from test_sweep import _frame, tiny

# Points of gapkit.io.kill_point; a comma list dies at the first reached. "random": an instant nobody chose.
PLAN = [
    "plan.json.tmp:1", "step:1", "checkpoint.between:1", "random", "step:3", "checkpoint.written:2",
    "best.between:1,step:4", "metrics.appended:4", "random", "routing.parquet.tmp:1,step:5", "result.json.tmp:1",
    "step:2", "checkpoint.between:3", "random", "finish:1", "best.written:1,step:3", "metrics.jsonl.tmp:1",
    "step:4", "random", "checkpoint.written:1", "result.json.tmp:2", "results.parquet.tmp:1", "step:6",
    "random", "checkpoint.between:2", "finish:2",
]


def _config(folder: Path) -> Path:
    config = folder.with_suffix(".yaml")
    spec = tiny(folder, teachers=[dict(family="scratch", shapes=["1L-32H-4A", "2L-32H-4A"])],
                budgets=dict(all=dict(lr=3e-3, max_steps=12, batch_size=16, eval_every=4, checkpoint_every=1,
                                      routing_every=1, device="cpu")), seeds=[0, 1])
    config.write_text(yaml.safe_dump(spec))
    return config


@pytest.mark.parametrize("plan, least", plans(PLAN, 20))
def test_sigkilled_sweep_resumes_to_the_uninterrupted_table(tmp_path, plan, least):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    launcher = Launcher(tmp_path)
    try:
        assert launcher.run(ref, args=["sweep", str(_config(ref)), "--quiet"]) == 0
        args = ["sweep", str(_config(cut)), "--quiet"]
        kills, rng, trace = 0, random.Random(1), []
        for kill_at in plan:
            if kill_at == "random":
                # The sleep picks the instant; the sweep also dies within 3 steps, so how far it gets never
                # depends on the machine's speed (see tests/test_kill.py).
                pid = launcher.start(cut, "step:3", args=args)
                time.sleep(rng.uniform(0.2, 2.0))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended first
                    pass
                rc = launcher.wait()
            else:  # a point a process may never reach: it still dies within 3 steps, the sweep not yet done
                rc = launcher.run(cut, kill_at if "step:" in kill_at else f"{kill_at},step:3", args)
            kills += rc == -signal.SIGKILL
            trace.append((kill_at, rc))
        while launcher.run(cut, args=args) != 0:
            pass
    finally:
        launcher.close()
    assert kills >= least, "\n".join(map(str, trace))
    a, b = build_table(ref), build_table(cut)
    assert not b.duplicated(["run", "split", "metric", "model"]).any()
    pd.testing.assert_frame_equal(_frame(a), _frame(b))
    saved = pd.read_parquet(cut / "results.parquet")
    pd.testing.assert_frame_equal(_frame(saved), _frame(b))
