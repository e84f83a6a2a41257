"""Distillation: objectives, run configuration, the training loop and multi-stage pipelines."""

from .config import DataSpec, DistillSpec, TrainSpec
from .losses import LossWeights, NonFiniteLossError, relation_loss
from .pipeline import PipelineSpec, run_pipeline, ta_chain
from .trainer import RunResult, evaluate, run

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
    "evaluate",
    "run",
]
