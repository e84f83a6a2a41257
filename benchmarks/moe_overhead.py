"""MiniMoE overhead: forward latency and training-step time of 1,4E vs its dense twin.

Measured side by side in one process, interleaving the two models every repeat so that machine
noise hits both alike. With ``--compile MODE`` every pair is measured twice in the same run, eager
rows (``compile=off``) beside compiled ones: both models go through ``torch.compile(fullgraph=True,
dynamic=False)`` with that mode (``reduce-overhead``: CUDA graphs), where the MiniMoE student takes its
sync-free static dispatch. The optimizer step and the toy loss stay eager in both.

``*_peak_mb`` (CUDA only): the most memory a model's phase added above what was allocated before it,
over its warm-up calls (activations, gradients and, on first use, the optimizer state and any CUDA-graph
capture). Prints the ratios and appends them to results/bench/moe_overhead.csv.

    python benchmarks/moe_overhead.py              # 3L-384H and 4L-384H, batch 32, length 128, CPU
    python benchmarks/moe_overhead.py --device cuda --bf16 --batch 32 256 --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine, timed  # noqa: E402

from gapkit.distill.compiling import compile_options, raise_recompile_limit  # noqa: E402
from gapkit.models import Student, StudentSpec  # noqa: E402

COMPILE_CHOICES = ("default", "reduce-overhead", "max-autotune", "cudagraphs", "aot_eager")


def peak_mb(fn, calls: int, device) -> float | None:
    """Memory ``calls`` calls of ``fn`` add at most above what is allocated before them (CUDA), in MB."""
    if device.type != "cuda":
        for _ in range(calls):
            fn()
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def compare(name: str, experts: str, batch: int, compile_mode: str, args, device) -> list[dict]:
    spec = StudentSpec.from_name(f"{name}-{experts}")
    torch.manual_seed(0)
    models = {"minimoe": Student(spec, dispatch=args.dispatch).to(device),
              "dense": Student(spec.dense_twin()).to(device)}
    calls = dict(models)
    if compile_mode != "off":
        raise_recompile_limit(8)
        calls = {k: torch.compile(m, dynamic=False, fullgraph=True, **compile_options(compile_mode))
                 for k, m in models.items()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, spec.vocab_size, (batch, args.seq_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}

    def infer(key):
        def run():
            with torch.no_grad(), amp:
                calls[key](ids, mask)
        return run

    def train_step(key):
        opt = optimizers[key]

        def run():
            with amp:
                out = calls[key](ids, mask)
                loss = out.last_hidden_state.float().square().mean() + 0.01 * out.load_balance
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    rows = []
    for phase in ("inference", "train_step"):
        fns = {k: (infer(k) if phase == "inference" else train_step(k)) for k in models}
        for m in models.values():
            m.train(phase == "train_step")
        t0 = time.perf_counter()
        peaks = {k: peak_mb(fns[k], args.warmup, device) for k in models}  # warm-up (and compile) inside
        warm_s = time.perf_counter() - t0
        times = {k: [] for k in models}
        for _ in range(args.repeats):
            for key in models:
                times[key].append(timed(fns[key], device))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["minimoe"] / med["dense"]
        print(f"{name:9s} {experts} {phase:10s} batch {batch:4d} compile {compile_mode:15s} dense "
              f"{med['dense'] * 1e3:8.2f} ms  minimoe {med['minimoe'] * 1e3:8.2f} ms  ratio {ratio:.3f}  "
              f"peak MB {peaks['dense']} / {peaks['minimoe']}  (warm-up {warm_s:.0f} s)", flush=True)
        rows.append(dict(student=name, experts=experts, phase=phase, batch=batch, seq_len=args.seq_len,
                         device=device.type, dtype="bf16" if args.bf16 else "fp32", dispatch=args.dispatch,
                         compile=compile_mode, repeats=args.repeats,
                         dense_ms=round(med["dense"] * 1e3, 3), minimoe_ms=round(med["minimoe"] * 1e3, 3),
                         ratio=round(ratio, 4), dense_peak_mb=peaks["dense"], minimoe_peak_mb=peaks["minimoe"]))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", nargs="+", default=["3L-384H", "4L-384H"])
    p.add_argument("--experts", default="1,4E")
    p.add_argument("--batch", type=int, nargs="+", default=[32])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3, help="calls before timing (compiled: at least 3, CUDA graphs "
                                                         "record on the second or third)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--dispatch", default="auto", choices=["auto", "sorted", "loop", "static"],
                   help="MiniMoE token dispatch of the eager rows (auto: grouped GEMMs on Hopper GPUs in bf16, "
                        "else sorted); compiled rows always take the static one")
    p.add_argument("--compile", choices=COMPILE_CHOICES, default=None,
                   help="also measure both models under torch.compile with this mode (rows beside the eager ones)")
    p.add_argument("--no-eager", action="store_true", help="with --compile: the compiled rows only")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    if args.no_eager and not args.compile:
        p.error("--no-eager needs --compile MODE")
    device = torch.device(args.device)
    info = machine()
    print(f"# {info['machine']}, torch {info['torch']}, {info['threads']} threads", flush=True)
    modes = ([] if args.no_eager else ["off"]) + ([args.compile] if args.compile else [])
    for batch in args.batch:
        for name in args.students:
            for mode in modes:
                rows = compare(name, args.experts, batch, mode, args, device)
                if not args.no_record:  # as they come: a run cut short keeps what it measured
                    path = append_rows("moe_overhead", [dict(row, **info) for row in rows])
                    print(f"# appended {len(rows)} rows to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
