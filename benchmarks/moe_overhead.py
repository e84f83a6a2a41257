"""MiniMoE overhead: forward latency and training-step time of 1,4E vs its dense twin.

Measured side by side in one process, interleaving the two models every repeat so that machine
noise hits both alike. Prints the ratios and appends them to results/bench/moe_overhead.csv.

    python benchmarks/moe_overhead.py              # 3L-384H and 4L-384H, batch 32, length 128
    python benchmarks/moe_overhead.py --device cuda --bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine  # noqa: E402

from gapkit.models import Student, StudentSpec  # noqa: E402


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compare(name: str, experts: str, args, device) -> list[dict]:
    spec = StudentSpec.from_name(f"{name}-{experts}")
    models = {"minimoe": Student(spec, dispatch=args.dispatch).to(device), "dense": Student(spec.dense_twin()).to(device)}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, spec.vocab_size, (args.batch, args.seq_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}

    def infer(model):
        def run():
            with torch.no_grad(), amp:
                model(ids, mask)
        return run

    def train_step(key):
        model, opt = models[key], optimizers[key]

        def run():
            with amp:
                out = model(ids, mask)
                loss = out.last_hidden_state.float().square().mean() + 0.01 * out.load_balance
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    rows = []
    for phase in ("inference", "train_step"):
        times = {k: [] for k in models}
        for m in models.values():
            m.train(phase == "train_step")
        for rep in range(args.warmup + args.repeats):
            for key, m in models.items():
                fn = infer(m) if phase == "inference" else train_step(key)
                t = timed(fn, device)
                if rep >= args.warmup:
                    times[key].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["minimoe"] / med["dense"]
        print(f"{name:9s} {experts} {phase:10s}  dense {med['dense'] * 1e3:8.1f} ms  "
              f"minimoe {med['minimoe'] * 1e3:8.1f} ms  ratio {ratio:.3f}", flush=True)
        rows.append(dict(student=name, experts=experts, phase=phase, batch=args.batch, seq_len=args.seq_len,
                         device=device.type, dtype="bf16" if args.bf16 else "fp32", dispatch=args.dispatch,
                         repeats=args.repeats,
                         dense_ms=round(med["dense"] * 1e3, 3), minimoe_ms=round(med["minimoe"] * 1e3, 3),
                         ratio=round(ratio, 4)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", nargs="+", default=["3L-384H", "4L-384H"])
    p.add_argument("--experts", default="1,4E")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--dispatch", default="auto", choices=["auto", "sorted", "loop"],
                   help="MiniMoE token dispatch (auto: grouped GEMMs on Hopper GPUs in bf16, else sorted)")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    info = machine()
    print(f"# {info['machine']}, torch {info['torch']}, {info['threads']} threads", flush=True)
    rows = []
    for name in args.students:
        rows += compare(name, args.experts, args, device)
    if not args.no_record:
        path = append_rows("moe_overhead", [dict(row, **info) for row in rows])
        print(f"# appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
