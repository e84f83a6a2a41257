"""How much `gapkit quickstart` slows down on a busy machine, against what the load explains.

Runs the quickstart (a fresh folder each time) with nothing else running and again beside one CPU-bound
process (a Python busy loop), for each executor asked for, in alternating order across repetitions, and
prints the wall times and the slowdown (busy / idle). On C cores one competing process leaves the
quickstart about (C - 1) / C of the machine when it uses every core, so the slowdown the load explains
is about C / (C - 1) (2 on 2 cores) for a run that keeps every core busy, and less for one that does not.
A ratio far above that is oversubscription: more compute threads than free cores, every small op
waiting at a barrier for the thread that lost its core.

    python benchmarks/quickstart_load.py                          # inline and local, full quickstart, x1
    python benchmarks/quickstart_load.py --executors local --steps 0.25 --reps 2
    python benchmarks/quickstart_load.py --dry-run                # a few steps (a test of the script)

``--steps`` scales every stage's max_steps (and eval_every) of the quickstart, for a shorter check with
the same structure. Appends to results/bench/quickstart_load.csv.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine  # noqa: E402

from gapkit.cli import QUICKSTART  # noqa: E402

BUSY_LOOP = "while True: pass"


def overrides(scale: float) -> list[str]:
    """--set overrides that scale the quickstart's step budgets by ``scale``."""
    budgets = yaml.safe_load(QUICKSTART.read_text())["budgets"]
    sets = []
    for stage, b in budgets.items():
        for key in ("max_steps", "eval_every"):
            if key in b:
                sets.append(f"budgets.{stage}.{key}={max(2, int(round(b[key] * scale)))}")
    return sets


def run_quickstart(executor: str, sets: list[str], busy: bool) -> float:
    """Wall seconds of one quickstart in a fresh folder (beside a busy loop when ``busy``)."""
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "gapkit", "quickstart", "--out", str(Path(tmp) / "qs"), "--quiet",
                   "--executor", executor] + [x for s in sets for x in ("--set", s)]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"gapkit quickstart failed ({executor}, busy={busy}):\n{done.stderr[-2000:]}")
            return wall
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executors", nargs="+", default=["inline", "local"], choices=["inline", "local"])
    parser.add_argument("--steps", type=float, default=1.0, help="scale of the quickstart's step budgets")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="a few steps, nothing recorded")
    args = parser.parse_args()
    scale = 0.01 if args.dry_run else args.steps
    sets = overrides(scale) if scale != 1.0 else []
    cores = os.cpu_count() or 1
    explained = cores / (cores - 1) if cores > 1 else float("inf")
    rows = []
    for rep in range(1 if args.dry_run else args.reps):
        for executor in args.executors:
            order = (False, True) if rep % 2 == 0 else (True, False)
            wall = {busy: run_quickstart(executor, sets, busy) for busy in order}
            row = dict(machine(), executor=executor, steps=scale, rep=rep, idle_s=round(wall[False], 1),
                       busy_s=round(wall[True], 1), slowdown=round(wall[True] / wall[False], 3),
                       explained=round(explained, 3))
            rows.append(row)
            print(f"{executor:6s} rep {rep}: idle {row['idle_s']:7.1f} s, beside one busy process {row['busy_s']:7.1f} s:"
                  f" slowdown {row['slowdown']:.2f} (the load explains about {explained:.2f} on {cores} cores)")
    if not args.dry_run:
        print(f"recorded in {append_rows('quickstart_load', rows)}")


if __name__ == "__main__":
    main()
