"""Randomness that belongs to one run.

Dropout, SDPA attention dropout, the MiniMoE gate noise, random routing and relation dropout all
draw from PyTorch's global generators (``nn.Dropout`` takes no generator). A :class:`RunRNG` keeps a
run's own generator states and swaps them in for the duration of that run's work
(``with rng.active(): ...``), then swaps the caller's back. Two runs stepped alternately in one
process therefore draw exactly what each would draw alone, and a run's states go into its checkpoint
(one per data-parallel rank) so that a resumed run continues the same streams.

Python's ``random`` and numpy are not used by training: data order comes from seeded
``torch.Generator`` permutations, text packing and the synthetic task from their own seeded
generators.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["RunRNG", "derive_seed"]


def derive_seed(seed: int, *salt: int) -> int:
    """A seed for a sub-stream (e.g. one per rank), deterministic in ``seed`` and ``salt``."""
    value = int(seed) & 0xFFFFFFFFFFFF
    for s in salt:
        value = (value * 1000003 + int(s) + 1) & 0x7FFFFFFFFFFFFFFF
    return value


class RunRNG:
    """The CPU (and, with ``device`` on CUDA, that device's) generator states of one run."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.reseed(seed)

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda"

    def reseed(self, seed: int) -> None:
        """Restart the run's streams from ``seed``."""
        with torch.random.fork_rng(devices=[self.device] if self._cuda else []):
            torch.manual_seed(seed)
            self._cpu = torch.get_rng_state()
            self._gpu = torch.cuda.get_rng_state(self.device) if self._cuda else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this run's streams the global ones inside the block; restore the caller's after."""
        saved_cpu = torch.get_rng_state()
        saved_gpu = torch.cuda.get_rng_state(self.device) if self._cuda else None
        torch.set_rng_state(self._cpu)
        if self._cuda:
            torch.cuda.set_rng_state(self._gpu, self.device)
        try:
            yield
        finally:
            self._cpu = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if self._cuda:
                self._gpu = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(saved_gpu, self.device)

    # -- checkpointing -----------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """The states as uint8 tensors (safetensors-ready)."""
        out = {"cpu": self._cpu.clone()}
        if self._cuda:
            out["cuda"] = self._gpu.clone()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._cpu = state["cpu"].clone()
        if self._cuda and "cuda" in state:
            self._gpu = state["cuda"].clone()
