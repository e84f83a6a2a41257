"""A sweep on a GPU through the sweep's local executor: 4 students on one teacher pass vs one by one.

A BERT-base-shaped teacher with random weights (no download), saved as a local folder, and 4 students
(3L-384H and 4L-384H, each dense MiniLM and MiniMoE 1,4E) trained by task-agnostic relation distillation
(32 relation heads) on the built-in synthetic task at a fixed length, in bf16, by ``gapkit sweep`` with
the ``local`` executor (one worker per visible GPU). The same sweep runs twice in one process:

- ``grouped``: the 4 students form one group (``run_group``: one teacher pass per batch for all);
- ``alone``: ``group_memory_gb`` so small that every student is its own group (its own teacher pass).

Each run logs its training throughput (``tokens_per_s`` over every ``log_every`` steps, the first
window dropped as warm-up) and, on a GPU, the process's peak memory (``peak_memory_mb``) to its
``metrics.jsonl``; the benchmark reads them back. A grouped run's rate is the group's step rate, so::

    speedup = sum_i (1 / rate_alone_i) / (1 / rate_grouped)

the time of the 4 steps one by one over the time of one grouped step. Wall times of both sweeps (model
building and evaluation included) are printed beside it. Appends to results/bench/sweep_gpu.csv.

    python benchmarks/sweep_gpu.py                 # a CUDA machine: 60 steps of batch 32, length 128
    python benchmarks/sweep_gpu.py --dry-run       # CPU, a tiny teacher and students, seconds (a test)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine  # noqa: E402

from gapkit.sweep import SweepSpec, plan, run_sweep  # noqa: E402

SHAPES = ["3L-384H", "4L-384H"]
DRY_SHAPES = ["1L-96H-4A"]


def write_teacher(folder: Path, dry: bool) -> Path:
    """A random BERT-base (dry: 2 layers, 64 wide) saved as a Hugging Face folder."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig() if not dry else BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=128,
                                                    max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def sweep(args, teacher: Path, out: Path, grouped: bool) -> SweepSpec:
    dry = args.dry_run
    length, vocab = (16, 128) if dry else (args.seq_len, 30522)
    n = args.steps * args.batch
    task = dict(task="synthetic", max_len=length, max_train_examples=n, max_eval_examples=8,
                synthetic=dict(vocab_size=vocab, min_len=length, max_len=length, n_train=n, n_dev=8))
    return SweepSpec(
        name="sweep_gpu", output_dir=str(out), tasks=[task], agnostic_data=task,
        teachers=[dict(ref=str(teacher), name="bert-base-random")],
        students=dict(shapes=DRY_SHAPES if dry else SHAPES),
        methods=["minilm", dict(name="minimoe", experts="1,4E")], stages=["agnostic"],
        budgets=dict(agnostic=dict(lr=1e-4, max_steps=args.steps, batch_size=args.batch, warmup=0.0,
                                   log_every=args.log_every, eval_every=args.steps, routing_every=10**6,
                                   device=args.device, bf16=args.device != "cpu")),
        relation_heads=4 if dry else 32, seeds=[0],
        executor=dict(kind="local", workers=1), group_memory_gb=64.0 if grouped else 1e-6)


def read_runs(spec: SweepSpec) -> dict:
    """{student label: (median tokens/s after the first window, peak MB or None)} from the run folders."""
    out = {}
    for node in plan(spec):
        rows = [json.loads(line) for line in (node.folder(spec.output_dir) / "metrics.jsonl").read_text().splitlines()]
        rates = [r["value"] for r in rows if r["split"] == "train" and r["metric"] == "tokens_per_s"][1:]
        peaks = [r["value"] for r in rows if r["split"] == "train" and r["metric"] == "peak_memory_mb"]
        if not rates:
            raise SystemExit(f"{node.id} logged fewer than 2 throughput windows: raise --steps or lower --log-every.")
        label = f"{node.meta.get('student')} {node.meta.get('method')}"
        out[label] = (statistics.median(rates), max(peaks) if peaks else None)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--dry-run", action="store_true", help="CPU, a tiny teacher and students, 6 steps")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.steps, args.batch, args.log_every = "cpu", 6, 4, 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("sweep_gpu.py: no CUDA device here; run it on a GPU machine, or --dry-run on the CPU.")
    work = Path(args.out or tempfile.mkdtemp(prefix="sweep-gpu-"))
    teacher = write_teacher(work / "teacher", args.dry_run)
    results, walls, units = {}, {}, {}
    for mode in ("grouped", "alone"):
        spec = sweep(args, teacher, work / mode, grouped=mode == "grouped")
        t0 = time.perf_counter()
        logs = []
        report = run_sweep(spec, progress=False, log=logs.append)
        walls[mode] = time.perf_counter() - t0
        units[mode] = sum(bool(re.match(r"\[\d+/\d+\] ", line)) for line in logs)  # one line per unit done
        if not report.ok:
            raise SystemExit(f"sweep_gpu.py: the {mode} sweep failed; see {spec.output_dir}.")
        results[mode] = read_runs(spec)
    grouped_rate = statistics.median(rate for rate, _ in results["grouped"].values())
    speedup = sum(1 / rate for rate, _ in results["alone"].values()) / (1 / grouped_rate)
    info = machine()
    rows = []
    for label, (rate, peak) in results["alone"].items():
        rows.append(dict(info, device=args.device, student=label, mode="alone", tokens_per_s=round(rate, 1),
                         peak_mb=None if peak is None else round(peak, 1), wall_s=round(walls["alone"], 2)))
    for label, (rate, peak) in results["grouped"].items():
        rows.append(dict(info, device=args.device, student=label, mode="grouped", tokens_per_s=round(rate, 1),
                         peak_mb=None if peak is None else round(peak, 1), wall_s=round(walls["grouped"], 2)))
    rows.append(dict(info, device=args.device, student="all 4", mode="speedup", tokens_per_s=round(speedup, 3),
                     peak_mb=None, wall_s=round(walls["alone"] / walls["grouped"], 3)))
    print(f"# {info['machine']}, torch {info['torch']}; {args.steps} steps of batch {args.batch}, "
          f"length {16 if args.dry_run else args.seq_len}")
    for r in rows[:-1]:
        print(f"{r['mode']:8s} {r['student']:28s} {r['tokens_per_s']:>12} tokens/s  peak {r['peak_mb']} MB")
    print(f"units of work: {units['grouped']} grouped, {units['alone']} alone")
    print(f"grouped speedup (step time, the students one by one / one grouped step): {speedup:.3f}; "
          f"sweep wall time {walls['alone']:.1f} s alone vs {walls['grouped']:.1f} s grouped")
    if not args.no_record:
        print(f"appended to {append_rows('sweep_gpu', rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
