"""End-to-end relation distillation throughput against the teacher-forward bound (GPU, bf16).

A BERT-base-shaped teacher with random weights (no download: the speed of a forward does not depend on
the weights) distils 3L-384H students, dense and MiniMoE 1,4E, by task-agnostic relation distillation
(stage ``agnostic``, Q/K/V relations of the last layers, 32 relation heads) on the built-in synthetic
task at a fixed length, through gapkit's own ``Run.step`` (the training step a sweep takes: loss,
backward, clipping, AdamW, schedule). Measured in one process, per ``train.compile`` mode (eager rows,
then compiled ones with ``--compile MODE``):

- ``teacher``: the teacher's forward alone on the step's micro-batch: the bound. No distillation step
  can beat the rate of its own teacher pass;
- ``student``: one student's step including its own teacher pass (how a run alone trains), its
  tokens/s and ``fraction_of_bound`` = its rate / the teacher-alone rate;
- ``alone``: the group's students one after another, each with its own teacher pass (the sum of their
  ``student`` steps);
- ``grouped``: one teacher pass shared by the group's students (as ``gapkit.sweep.group.run_group``
  does: the teacher's outputs and relation rows computed once), and ``speedup`` = alone / grouped.

Times are medians over ``--steps`` steps after ``--warmup`` (compiling happens in the warm-up),
synchronised on CUDA. ``peak_mb``: the most memory the measured steps added above what was allocated
before them (``torch.cuda.max_memory_allocated``: activations, the teacher's outputs, gradients);
``resident_mb``: what was allocated before them (the teacher, the students and their optimizer
state). Prints a table and appends it to results/bench/distill_throughput.csv.

    python benchmarks/distill_throughput.py --device cuda --compile reduce-overhead
    python benchmarks/distill_throughput.py --dry-run      # tiny teacher and students on the CPU, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine  # noqa: E402

from gapkit.distill import DistillSpec, Run, TeacherSide  # noqa: E402
from gapkit.distill.compiling import bucket_lengths  # noqa: E402
from gapkit.distill.teacher_side import TeacherNeeds, to_device  # noqa: E402
from gapkit.models.teacher import Teacher  # noqa: E402

STUDENTS = ["3L-384H", "3L-384H-1,4E"]
GROUP = ["3L-384H", "3L-384H-1,4E", "2L-384H", "4L-384H"]
DRY_STUDENTS = ["1L-96H-4A", "1L-96H-4A-1,4E"]
BERT_VOCAB = 30522


def make_teacher(dry: bool):
    """A random BERT-base (or, dry, a 2-layer 64-wide BERT)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig() if not dry else BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=128,
                                                    max_position_embeddings=64)
    return Teacher(BertModel(config))


def make_spec(student: str, out: Path, args, total_steps: int) -> DistillSpec:
    vocab = 128 if args.dry_run else BERT_VOCAB
    spec = DistillSpec(
        stage="agnostic", student=student, teacher="random-bert-base", output_dir=str(out),
        data=dict(task="synthetic", max_len=args.seq_len, max_train_examples=total_steps * args.batch,
                  max_eval_examples=8,
                  synthetic=dict(vocab_size=vocab, min_len=args.seq_len, max_len=args.seq_len,
                                 n_train=total_steps * args.batch, n_dev=8)),
        relation_heads=32, weights=dict(relation=1.0),
        train=dict(lr=1e-4, max_steps=total_steps, batch_size=args.batch, warmup=0.0, log_every=10**6,
                   routing_every=10**6, device=args.device, bf16=True, seed=0, compile=args.mode),
    )
    return spec


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Meter:
    """Median seconds per step, and the memory the steps added (CUDA)."""

    def __init__(self, device: torch.device):
        self.device, self.times, self.base, self.peak = device, [], None, None

    def __enter__(self):
        sync(self.device)
        if self.device.type == "cuda" and self.base is None:
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.times.append(time.perf_counter() - self._t0)
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self.base

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    def mb(self, value) -> float | None:
        return round(value / 2**20, 1) if value is not None else None


def measure(args, device: torch.device, work: Path) -> list[dict]:
    """Every row of one compile mode."""
    group = DRY_STUDENTS if args.dry_run else args.group
    singles = [s for s in (DRY_STUDENTS if args.dry_run else args.students)]
    total = 2 * (args.warmup + args.steps)  # the alone loop, then the grouped loop
    side = TeacherSide(make_teacher(args.dry_run), "random-bert-base", TeacherNeeds(qkv=True), device, bf16=True,
                       compile=args.mode, buckets=bucket_lengths(args.seq_len) if args.mode != "off" else None)
    names = list(dict.fromkeys(singles + group))
    specs = {s: make_spec(s, work / f"{args.mode}-{i}", args, total) for i, s in enumerate(names)}
    runs = {s: Run(spec, teacher=side, progress=False) for s, spec in specs.items()}
    tokens = args.batch * args.seq_len  # every position is a real token (fixed-length examples)
    first = runs[names[0]]

    def teacher_pass(micro):
        return [side(to_device(b, device)) for b in micro]

    # The bound: the teacher's forward alone, on the same batches.
    teacher = Meter(device)
    for i in range(args.warmup + args.steps):
        micro = first.batches.for_step(i)
        if i < args.warmup:
            teacher_pass(micro)
            continue
        with teacher:
            teacher_pass(micro)
    rows = [dict(kind="teacher", students="teacher", ms_per_step=teacher.seconds * 1e3,
                 tokens_per_s=tokens / teacher.seconds, fraction_of_bound=1.0, speedup=None,
                 peak_mb=teacher.mb(teacher.peak), resident_mb=teacher.mb(teacher.base))]

    # Each student alone (its own teacher pass), one after another: the per-student rows and "alone".
    meters = {s: Meter(device) for s in names}
    alone = []
    for i in range(args.warmup + args.steps):
        t_step = 0.0
        for s in names:
            r = runs[s]
            micro = r.next_batches()
            if i < args.warmup:
                r.step(micro, teacher_pass(micro))
                continue
            with meters[s] as m:
                r.step(micro, teacher_pass(micro))
            if s in group:
                t_step += m.times[-1]
        if i >= args.warmup:
            alone.append(t_step)
    for s in singles:
        sec = meters[s].seconds
        rows.append(dict(kind="student", students=s, ms_per_step=sec * 1e3, tokens_per_s=tokens / sec,
                         fraction_of_bound=teacher.seconds / sec, speedup=None,
                         peak_mb=meters[s].mb(meters[s].peak), resident_mb=meters[s].mb(meters[s].base)))
    alone_s = statistics.median(alone)

    # The group on one teacher pass per step (outputs and relation rows shared, as run_group does).
    grouped = Meter(device)
    side.share_relation_rows = True
    for i in range(args.warmup + args.steps):
        micro = runs[group[0]].next_batches()
        if i >= args.warmup:
            grouped.__enter__()
        outputs = teacher_pass(micro)
        for s in group:
            runs[s].step(micro, outputs)
        if i >= args.warmup:
            grouped.__exit__()
    label = " + ".join(group)
    rows.append(dict(kind="alone", students=label, ms_per_step=alone_s * 1e3,
                     tokens_per_s=len(group) * tokens / alone_s, fraction_of_bound=None, speedup=1.0,
                     peak_mb=None, resident_mb=None))
    rows.append(dict(kind="grouped", students=label, ms_per_step=grouped.seconds * 1e3,
                     tokens_per_s=len(group) * tokens / grouped.seconds, fraction_of_bound=None,
                     speedup=alone_s / grouped.seconds, peak_mb=grouped.mb(grouped.peak),
                     resident_mb=grouped.mb(grouped.base)))
    for r in runs.values():
        r.close()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--students", nargs="+", default=STUDENTS, help="students measured alone against the bound")
    p.add_argument("--group", nargs="+", default=GROUP, help="students of the grouped step (one teacher pass)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="steps before timing (compiling and CUDA-graph capture)")
    p.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune", "cudagraphs", "aot_eager"],
                   help="also measure with train.compile set to this mode (rows beside the eager ones)")
    p.add_argument("--no-eager", action="store_true", help="with --compile: the compiled rows only")
    p.add_argument("--dry-run", action="store_true", help="a tiny teacher and 2 tiny students, length 16, 2 steps, CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (on a busy machine: its idle cores)")
    p.add_argument("--out", default=None, help="work folder for the run folders (default: a temporary one)")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    if args.no_eager and not args.compile:
        p.error("--no-eager needs --compile MODE")
    if args.dry_run:
        args.device, args.batch, args.seq_len, args.steps, args.warmup = "cpu", 4, 16, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device is visible: run on a GPU machine, or pass --dry-run (CPU, tiny shapes).")
    info = machine()
    print(f"# {info['machine']}, torch {info['torch']}, {info['threads']} threads", flush=True)
    modes = ([] if args.no_eager else ["off"]) + ([args.compile] if args.compile else [])
    with tempfile.TemporaryDirectory(prefix="distill-throughput-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        for mode in modes:
            args.mode = mode
            t0 = time.perf_counter()
            mode_rows = measure(args, device, work)
            print(f"## compile={mode} ({time.perf_counter() - t0:.0f} s, warm-up and compiling included)")
            for row in mode_rows:
                frac = f"{row['fraction_of_bound']:.2f}" if row["fraction_of_bound"] is not None else "    "
                speed = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "     "
                print(f"{row['kind']:8s} {row['students']:45s} {row['ms_per_step']:9.2f} ms  "
                      f"{row['tokens_per_s']:12.0f} tok/s  bound {frac}  {speed}  peak MB {row['peak_mb']}  "
                      f"resident MB {row['resident_mb']}", flush=True)
            rows = [dict(row, compile=mode, batch=args.batch, seq_len=args.seq_len,
                         dtype="bf16" if device.type == "cuda" else "fp32", steps=args.steps,
                         dry_run=args.dry_run, **info) for row in mode_rows]
            for row in rows:
                for k in ("ms_per_step", "tokens_per_s", "fraction_of_bound", "speedup"):
                    if row[k] is not None:
                        row[k] = round(row[k], 4)
            if not args.no_record:  # as they come: a run cut short keeps what it measured
                path = append_rows("distill_throughput", rows)
                print(f"# appended {len(rows)} rows to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
