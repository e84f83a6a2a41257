"""Student encoders (dense and MiniMoE), presets, teachers and checkpoint import/export.

Names are imported on first use (:mod:`gapkit.lazy`): a shape or preset needs no torch.
"""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".spec": ("PRESETS", "StudentSpec", "parse_shape", "spec_from_name"),
    ".student": ("ExpertLinear", "Router", "Student", "StudentOutput", "dispatch_loop", "dispatch_sorted"),
    ".checkpoint": ("load_student", "save_pretrained", "student_from_hf"),
    ".hf_loading": ("LoadReport", "load_hf_model"),
    ".teacher": ("Teacher", "TeacherOutput"),
})
