"""Start-up time of the ``gapkit`` command: this checkout against a baseline revision, side by side.

Each light command (``--version``, ``--help``, ``status``, ``results`` and a config error) is run as a
fresh interpreter, alternating between this checkout and a baseline revision checked out into a temporary
git worktree, and timed from launch to exit. Prints the median wall time of each, the ratio
(baseline / this checkout), and whether the command imported torch (read from ``python -X importtime``),
and appends the rows to results/bench/cli_startup.csv.

    python benchmarks/cli_startup.py --baseline 256ef13          # the revision before lazy imports
    python benchmarks/cli_startup.py --baseline HEAD --reps 3
    python benchmarks/cli_startup.py --dry-run                   # this checkout only, once (a test of the script)

The sweep folder that ``status`` and ``results`` read is made once with ``gapkit quickstart`` at a few
steps (or given with ``--sweep DIR``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUICK = ["budgets={all: {lr: 1.0e-3, max_steps: 2, batch_size: 16, eval_every: 2, device: cpu}}",
         "tasks=[{task: synthetic, max_len: 16, synthetic: {rule: span, min_len: 12, max_len: 16, n_train: 64, "
         "n_dev: 32}}]", "students={shapes: [1L-16H-4A]}", "seeds=[0]", "executor={kind: inline}"]


def commands(sweep: Path, bad_config: Path) -> dict[str, list[str]]:
    """The light commands, by label: none of them trains or builds a model."""
    return {"--version": ["--version"], "--help": ["--help"], "status": ["status", str(sweep)],
            "results": ["results", str(sweep)], "config error": ["distill", str(bad_config)]}


def run_once(source: Path, args: list[str], env: dict) -> tuple[float, bool]:
    """(wall seconds, whether torch was imported) of ``python -m gapkit ARGS`` with ``source`` first on the path."""
    env = dict(env, PYTHONPATH=str(source))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gapkit", *args], capture_output=True,
                          text=True, env=env, cwd=source)
    wall = time.perf_counter() - start
    torch_loaded = any(line.startswith("import time:") and line.split("|")[-1].strip() == "torch"
                       for line in done.stderr.splitlines())
    if done.returncode not in (0, 2):
        raise SystemExit(f"gapkit {' '.join(args)} failed in {source}:\n{done.stderr[-2000:]}")
    return wall, torch_loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision to compare against (a temporary worktree)")
    parser.add_argument("--reps", type=int, default=5, help="runs of each command per checkout (default 5)")
    parser.add_argument("--sweep", type=Path, help="a finished sweep folder for status/results")
    parser.add_argument("--dry-run", action="store_true", help="this checkout only, one run each, no CSV row")
    args = parser.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sweep = args.sweep
        if sweep is None:
            sweep = tmp / "qs"
            sets = [x for s in QUICK for x in ("--set", s)]
            subprocess.run([sys.executable, "-m", "gapkit", "quickstart", "--quiet", "--out", str(sweep), *sets],
                           check=True, capture_output=True, env=dict(env, PYTHONPATH=str(ROOT)), cwd=ROOT)
        bad = tmp / "bad.yaml"
        bad.write_text("stage: finetune\nstudent: 2L-64H\ntrain: {lr: fast}\n")
        sources = {"this checkout": ROOT}
        if args.baseline and not args.dry_run:
            base = tmp / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
            stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
            sources["baseline"] = base
        reps = 1 if args.dry_run else args.reps
        times: dict[tuple[str, str], list[float]] = {}
        loads: dict[tuple[str, str], bool] = {}
        for _ in range(reps):
            for label, cmd in commands(sweep, bad).items():
                for name, source in sources.items():  # alternate, so drifting load hits both alike
                    wall, torch_loaded = run_once(source, cmd, env)
                    times.setdefault((label, name), []).append(wall)
                    loads[(label, name)] = torch_loaded
    rows = []
    print(f"{'command':14} {'this checkout':>14} {'baseline':>10} {'ratio':>6}  torch imported (this / baseline)")
    for label in commands(sweep, bad):
        now = statistics.median(times[(label, "this checkout")])
        before = statistics.median(times[(label, "baseline")]) if "baseline" in sources else float("nan")
        ratio = before / now
        print(f"{label:14} {now:13.2f}s {before:9.2f}s {ratio:6.1f}  {loads[(label, 'this checkout')]} / "
              f"{loads.get((label, 'baseline'), '-')}")
        rows.append(dict(command=label, seconds=round(now, 3), baseline_seconds=round(before, 3),
                         ratio=round(ratio, 2), torch_imported=loads[(label, "this checkout")],
                         baseline_torch_imported=loads.get((label, "baseline")), reps=reps,
                         baseline=args.baseline or ""))
    if not args.dry_run:
        from common import append_rows, machine

        info = machine()
        path = append_rows("cli_startup", [dict(r, **info) for r in rows])
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
