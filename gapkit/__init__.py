"""gapkit: the curse-of-capacity-gap toolkit.

Dense and MiniMoE students (``Student``, ``StudentSpec``), Hugging Face teachers (``Teacher``),
checkpoints (``load_student``, ``save_pretrained``), FLOP accounting under named conventions
(``count_flops``, ``analytic_count``), routing statistics (``RoutingRecord``), and distillation runs
(``DistillSpec``, ``run``, ``PipelineSpec``, ``run_pipeline``).
"""

from .distill import DataSpec, DistillSpec, LossWeights, PipelineSpec, Run, RunResult, TrainSpec, run, run_pipeline, ta_chain
from .errors import ConfigError, DataError, GapkitError, ModelError, TrainingFailed
from .flops import CONVENTIONS, analytic_count, analytic_macs, count_flops, count_params, describe
from .models import (
    PRESETS,
    Student,
    StudentOutput,
    StudentSpec,
    Teacher,
    load_student,
    save_pretrained,
    spec_from_name,
    student_from_hf,
)
from .routing import RoutingAccumulator, RoutingRecord, routing_rows
from .version import __version__

__all__ = [
    "Student", "StudentSpec", "StudentOutput", "PRESETS", "spec_from_name", "Teacher",
    "load_student", "save_pretrained", "student_from_hf",
    "CONVENTIONS", "analytic_count", "analytic_macs", "count_flops", "count_params", "describe",
    "RoutingRecord", "RoutingAccumulator", "routing_rows",
    "DataSpec", "TrainSpec", "DistillSpec", "LossWeights", "PipelineSpec", "Run", "RunResult", "run", "run_pipeline", "ta_chain",
    "GapkitError", "ConfigError", "DataError", "ModelError", "TrainingFailed",
]
