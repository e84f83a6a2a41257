"""Run under torchrun (2 CPU ranks) by tests/test_engine.py.

Modes: ``full`` trains a dense run without dropout (``nodrop``, compared with one process) and a
MiniMoE run with dropout and gate noise (``drop``); ``cut`` starts the dropout run again in ``cut`` and dies at step 3 (its checkpoint
is at step 2); ``resume`` continues ``cut``.
"""

import sys

import torch.distributed as dist

from gapkit.distill import DistillSpec, run


def ddp_spec(out, dropout: bool) -> DistillSpec:
    student = dict(layers=2, hidden=32, heads=4, ffn=96, ffn_experts=4, vocab_size=128)
    if not dropout:
        # Compared with one process: dense, since the Switch load balance of a half batch is not half of
        # the full batch's (a product of means), so MoE runs differ by design, not by a sharding bug.
        student.update(dropout=0.0, attention_dropout=0.0, ffn_experts=1)
    return DistillSpec(
        stage="finetune", student=student, output_dir=str(out),
        data=dict(task="synthetic", max_len=32, max_train_examples=256, max_eval_examples=64),
        train=dict(lr=1e-3, max_steps=6, batch_size=16, eval_every=3, checkpoint_every=2, log_every=1,
                   grad_clip=0.0, device="cpu"),
        weights=dict(relation=0, hard=1.0),
    )


def main(out: str, mode: str) -> None:
    if mode == "full":
        run(ddp_spec(f"{out}/nodrop", dropout=False), progress=False)
        run(ddp_spec(f"{out}/drop", dropout=True), progress=False)
    elif mode == "cut":
        def die(step, logs, model):
            if step == 3:
                raise SystemExit(3)

        run(ddp_spec(f"{out}/cut", dropout=True), callback=die, progress=False)
    else:
        run(ddp_spec(f"{out}/cut", dropout=True), resume=True, progress=False)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
