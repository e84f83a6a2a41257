"""What a run's best weights predicted on a scored split (``best/predictions.safetensors``, written by every
run with a labeled task): the dev-example half of the verdicts' variance (:mod:`gapkit.analysis.verdicts`)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_predictions"]


def run_predictions(run_dir, split: str):
    """(predictions, labels) tensors a run's best weights made on ``split``, or None when the run folder or
    its ``best/predictions.safetensors`` (or that split in it) is not there."""
    from safetensors.torch import load_file

    from ..distill.runfiles import PREDICTIONS

    if run_dir is None or not isinstance(run_dir, str) or not run_dir:
        return None
    path = Path(run_dir) / "best" / PREDICTIONS
    if not path.is_file():
        return None
    tensors = load_file(path)
    if f"{split}.prediction" not in tensors or f"{split}.label" not in tensors:
        return None
    return tensors[f"{split}.prediction"], tensors[f"{split}.label"]
