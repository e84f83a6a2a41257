"""Measured rates for a sweep's cost: tokens/s of each model's training step and forward (GPU, bf16).

``gapkit sweep CONFIG --dry-run`` prices a run as its trained model's training steps plus its teacher's
forwards (``gapkit.sweep.cost``). This script measures exactly those (shape, phase) pairs for a sweep file
(default: configs/sweeps/bert_ladder.yaml), each at the micro-batch and length its runs use:

- ``train``: forward, backward and an AdamW step of the trained model (a teacher being fine-tuned, a
  student being distilled) under bf16 autocast, on a toy loss (the mean of the last hidden states: the
  distillation losses are small next to the model);
- ``forward``: a teacher's forward without gradients, as a teacher side runs it.

Hub checkpoints are built as Hugging Face ``BertModel``s of their known shape with random weights (the speed
of a step does not depend on the weights: no download), students as gapkit ``Student``s, dense or MiniMoE.
Medians over ``--steps`` after ``--warmup``, synchronised on CUDA, eager (``train.compile: off``, the sweep
default). Appends rows to results/bench/throughput.csv (``shape``, ``phase``, ``batch``, ``seq_len``,
``tokens_per_s``, ``machine``: what the dry run reads) as they come.

    python benchmarks/throughput.py --device cuda                        # the ladder's models
    python benchmarks/throughput.py --device cuda --sweep configs/sweeps/paper_glue.yaml
    python benchmarks/throughput.py --dry-run                            # two tiny models on the CPU, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine, timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DRY = [("1L-64H-4A", "train", 2, 16), ("2L-64H-4A", "forward", 2, 16), ("1L-64H-4A-1,4E", "train", 2, 16)]


def needs(sweep: Path) -> list[tuple]:
    """The (model reference, shape name, phase, micro-batch, length) a sweep's cost estimate asks for."""
    from gapkit.sweep import SweepSpec, plan
    from gapkit.sweep.plan import node_shape

    spec = SweepSpec.from_file(sweep, ["seeds=[0]"])  # shapes and batches do not depend on the seeds
    nodes = plan(spec)
    by_id = {n.id: n for n in nodes}
    out = {}
    for node in nodes:
        if node.kind == "prepare":
            continue
        run = node.spec()
        micro, length = run.train.batch_size // run.train.grad_accum, run.data.max_len
        trained = node_shape(node, by_id)
        teacher = node_shape(by_id[node.teacher_from], by_id) if node.teacher_from in by_id else None
        if teacher is None and run.teacher:
            from gapkit.flops import resolve_model

            teacher = resolve_model(str(run.teacher)).spec
        for model, phase in ((trained, "train"), (teacher, "forward")):
            if model is not None:
                out.setdefault((model.shape_name, phase, micro, length), model)
    return [(spec, *key) for key, spec in out.items()]


def build(spec, device):
    """A random model of ``spec``: a Hugging Face BertModel for a dense BERT shape a teacher has, else a Student."""
    from gapkit.models import Student

    if spec.is_moe or spec.name == spec.shape_name:  # a student shape (gapkit builds it)
        return Student(spec).to(device)
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                                num_attention_heads=spec.heads, intermediate_size=spec.ffn,
                                max_position_embeddings=spec.max_positions)).to(device)


def hidden(model, ids):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return out.last_hidden_state


def measure(spec, phase: str, batch: int, length: int, args, device) -> float:
    """Median seconds of one step."""
    torch.manual_seed(0)
    model = build(spec, device)
    ids = torch.randint(1, min(spec.vocab_size, 30000), (batch, length), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    autocast = torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")
    if phase == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            with autocast:
                loss = hidden(model, ids).float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                hidden(model, ids)
    times = [timed(step, device) for _ in range(args.warmup + args.steps)][args.warmup:]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default=str(REPO / "configs" / "sweeps" / "bert_ladder.yaml"),
                   help="the sweep whose models are measured (default: the teacher ladder)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="three tiny models, batch 2, length 16, CPU")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    if args.dry_run:
        from gapkit.models.spec import spec_from_name

        args.device, args.steps, args.warmup = "cpu", 1, 1
        todo = [(spec_from_name(name), spec_from_name(name).shape_name, phase, b, t) for name, phase, b, t in DRY]
    else:
        todo = needs(Path(args.sweep))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device is visible: run on a GPU machine, or pass --dry-run (CPU, tiny shapes).")
    info = machine()
    print(f"# {info['machine']}, torch {info['torch']}: {len(todo)} (shape, phase, batch, length) to measure",
          flush=True)
    # Small models first: a part cut short by its time limit keeps the most rows.
    todo.sort(key=lambda t: (t[0].layers * t[0].hidden ** 2, t[2] == "train", t[3]))
    for spec, shape, phase, batch, length in todo:
        try:
            sec = measure(spec, phase, batch, length, args, device)
        except torch.OutOfMemoryError:  # one model too big at this batch is a missing row, said so
            print(f"{shape:16s} {phase:8s} batch {batch:4d} x {length}: out of memory, no row", flush=True)
            torch.cuda.empty_cache()
            continue
        row = dict(model=spec.name, shape=shape, phase=phase, batch=batch, seq_len=length,
                   dtype="bf16" if device.type == "cuda" else "fp32", compile="off", steps=args.steps,
                   ms_per_step=round(sec * 1e3, 3), tokens_per_s=round(batch * length / sec, 1),
                   dry_run=args.dry_run, **info)
        print(f"{shape:16s} {phase:8s} batch {batch:4d} x {length}: {row['ms_per_step']:9.2f} ms  "
              f"{row['tokens_per_s']:12.0f} tok/s", flush=True)
        if not args.no_record:  # as they come: a run cut short keeps what it measured
            append_rows("throughput", [row])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
