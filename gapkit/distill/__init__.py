"""Distillation: objectives, run configuration, the training loop and multi-stage pipelines."""

from .config import DataSpec, DistillSpec, TrainSpec
from .losses import LossWeights, NonFiniteLossError, relation_loss
from .pipeline import PipelineSpec, run_pipeline, ta_chain
from .result import RunResult
from .teacher_side import TeacherSide
from .trainer import Run, run

__all__ = [
    "DataSpec",
    "DistillSpec",
    "TrainSpec",
    "LossWeights",
    "NonFiniteLossError",
    "relation_loss",
    "PipelineSpec",
    "run_pipeline",
    "ta_chain",
    "RunResult",
    "Run",
    "TeacherSide",
    "run",
]
