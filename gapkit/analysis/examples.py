"""What a run's best weights predicted on a scored split (saved beside them by every run with a labeled
task, see :mod:`gapkit.distill.runfiles`): the dev-example half of the verdicts' variance
(:mod:`gapkit.analysis.verdicts`)."""

from __future__ import annotations

from ..distill.runfiles import RunDir

__all__ = ["run_predictions"]


def run_predictions(run_dir, split: str):
    """(predictions, labels) tensors a run's best weights made on ``split``, or None when the run folder, its
    saved predictions, or that split in them is not there (:meth:`RunDir.predictions`)."""
    if run_dir is None or not isinstance(run_dir, str) or not run_dir:
        return None
    return RunDir(run_dir).predictions(split)
