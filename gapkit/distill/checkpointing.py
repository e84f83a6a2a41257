"""Resumable training state: model, optimizer, scheduler, the run's generators (every rank's) and the
loop state (step, best, last evaluation).

Tensors go to safetensors files, everything else to one small JSON written last; the folder is
swapped in with :func:`gapkit.io.atomic_dir`, so a run killed mid-write keeps the previous
checkpoint. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..io import atomic_dir, save_safetensors

if TYPE_CHECKING:  # torch is imported where a state is saved or loaded: run folders are read without it
    import torch

STATE_FILE = "state.json"
FORMAT = 2  # 2: per-rank run generators (gapkit.distill.rng); 1 had the process-global ones


def _torch():
    import torch

    return torch


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if _torch().is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(folder: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler, state: dict, rng: list[dict[str, torch.Tensor]]) -> Path:
    """Write a resumable checkpoint to ``folder`` atomically (:func:`gapkit.io.atomic_dir`).

    Args:
        model: the trained module (student plus distillation heads); its state_dict is saved.
        optimizer, scheduler: their states.
        state: JSON-able loop state (step, best metric, last evaluation ...).
        rng: the run's generator states of every data-parallel rank, in rank order
            (:meth:`gapkit.distill.rng.RunRNG.state`).
    """
    with atomic_dir(folder) as tmp:
        model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_safetensors(model_state, tmp / "model.safetensors")
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        save_safetensors(opt_tensors, tmp / "optimizer.safetensors")
        save_safetensors({f"rank{r}.{k}": v.contiguous() for r, states in enumerate(rng) for k, v in states.items()},
                         tmp / "rng.safetensors")
        meta = dict(state, format=FORMAT, world_size=len(rng), optimizer=opt_meta, scheduler=scheduler.state_dict())
        # state.json last: a folder without it is never taken for a checkpoint.
        (tmp / STATE_FILE).write_text(json.dumps(meta))
    return Path(folder)


def has_training_state(folder: str | os.PathLike) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def load_training_state(folder: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler, rank: int = 0, world_size: int = 1) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore what :func:`save_training_state` wrote.

    Returns:
        (the loop state, this rank's generator states).
    Raises:
        ConfigError: the checkpoint is corrupt, of another format, or was written by another number of
            data-parallel ranks.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / STATE_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        if meta["world_size"] != world_size:
            raise ConfigError(f"The checkpoint in {folder} was written by {meta['world_size']} data-parallel "
                              f"rank(s) and this run has {world_size}: resume with {meta['world_size']}.")
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        device = next(model.parameters()).device
        opt_tensors = {k: v.to(device) if not k.endswith(".step") else v
                       for k, v in load_file(str(folder / "optimizer.safetensors")).items()}
        optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, meta.pop("optimizer")))
        scheduler.load_state_dict(meta.pop("scheduler"))
        prefix = f"rank{rank}."
        rng = {k[len(prefix):]: v for k, v in load_file(str(folder / "rng.safetensors")).items() if k.startswith(prefix)}
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        raise ConfigError(f"The checkpoint in {folder} cannot be resumed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}): move the run folder away and start "
                          f"the run again.") from None
    return meta, rng
