"""Run under torchrun by tests/test_trainer.py: trains a tiny MiniMoE student with 2 CPU ranks and saves
each rank's parameters, so the test can check that data-parallel training keeps them identical."""

import sys

import torch.distributed as dist
from safetensors.torch import save_file

from gapkit.distill import DistillSpec, run


def main(out: str) -> None:
    spec = DistillSpec(
        stage="finetune", student="2L-32H-4A-1,4E", output_dir=f"{out}/run",
        data=dict(task="synthetic", max_len=32, max_train_examples=256, max_eval_examples=64),
        train=dict(lr=1e-3, max_steps=5, batch_size=16, log_every=1, device="cpu"),
        weights=dict(relation=0, hard=1.0),
    )
    saved = {}

    def keep(step, logs, model):
        saved.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    run(spec, callback=keep, progress=False)
    save_file(saved, f"{out}/rank{dist.get_rank()}.safetensors")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
