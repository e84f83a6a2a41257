"""gapkit: the curse-of-capacity-gap toolkit.

Dense and MiniMoE students (``Student``, ``StudentSpec``), Hugging Face teachers (``Teacher``),
checkpoints (``load_student``, ``save_pretrained``), FLOP accounting under named conventions
(``count_flops``, ``analytic_count``), routing statistics (``RoutingRecord``), and distillation runs
(``DistillSpec``, ``run``, ``PipelineSpec``, ``run_pipeline``).

The names are imported on first use (:mod:`gapkit.lazy`), so ``import gapkit`` and the command line's light
verbs start without torch.
"""

from .errors import ConfigError, DataError, GapkitError, ModelError, TrainingFailed
from .lazy import lazy_exports
from .version import __version__

__getattr__, __dir__, _names = lazy_exports(__name__, {
    ".models": ("Student", "StudentSpec", "StudentOutput", "PRESETS", "spec_from_name", "Teacher", "load_student",
                "save_pretrained", "student_from_hf"),
    ".flops": ("CONVENTIONS", "analytic_count", "analytic_macs", "count_flops", "count_params", "describe"),
    ".routing": ("RoutingRecord", "RoutingAccumulator", "routing_rows"),
    ".distill": ("DataSpec", "TrainSpec", "DistillSpec", "LossWeights", "PipelineSpec", "Run", "RunResult", "run",
                 "run_pipeline", "ta_chain"),
})
__all__ = _names + ["GapkitError", "ConfigError", "DataError", "ModelError", "TrainingFailed", "__version__"]
