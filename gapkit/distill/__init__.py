"""Distillation: objectives, run configuration, the training loop and multi-stage pipelines.

Names are imported on first use (:mod:`gapkit.lazy`): reading a config needs no torch.
"""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".config": ("DataSpec", "DistillSpec", "TrainSpec", "LossWeights"),
    ".losses": ("NonFiniteLossError", "relation_loss"),
    ".pipeline": ("PipelineSpec", "run_pipeline", "ta_chain"),
    ".result": ("RunResult",),
    ".teacher_side": ("TeacherSide",),
    ".trainer": ("Run", "run"),
})
