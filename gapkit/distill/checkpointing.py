"""Resumable training state: model, optimizer, scheduler, RNG and data position.

Tensors go to safetensors files, everything else to one small JSON; a checkpoint folder is written
beside its final name and renamed into place, so a run killed mid-write leaves the previous
checkpoint intact. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
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


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_training_state(folder: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler, state: dict) -> Path:
    """Write a resumable checkpoint to ``folder`` atomically (``folder.tmp`` then rename).

    Args:
        model: the trained module (student plus distillation heads); its state_dict is saved.
        optimizer, scheduler: their states.
        state: JSON-able loop state (step, epoch, position in the epoch, best metric ...).
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(model_state, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    meta = dict(state, optimizer=opt_meta, scheduler=scheduler.state_dict(), rng=rng_meta)
    (tmp / STATE_FILE).write_text(json.dumps(meta))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def has_training_state(folder: str | os.PathLike) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def load_training_state(folder: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler) -> dict:
    """Restore what :func:`save_training_state` wrote (RNG included); returns the loop state."""
    folder = Path(folder)
    meta = json.loads((folder / STATE_FILE).read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    device = next(model.parameters()).device
    opt_tensors = {k: v.to(device) if not k.endswith(".step") else v
                   for k, v in load_file(str(folder / "optimizer.safetensors")).items()}
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, meta.pop("optimizer")))
    scheduler.load_state_dict(meta.pop("scheduler"))
    _set_rng_state(load_file(str(folder / "rng.safetensors")), meta.pop("rng"))
    return meta
