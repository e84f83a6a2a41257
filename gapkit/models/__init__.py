"""Student encoders (dense and MiniMoE), presets, teachers and checkpoint import/export."""

from .spec import PRESETS, StudentSpec, parse_shape, spec_from_name
from .student import ExpertLinear, Router, Student, StudentOutput, dispatch_loop, dispatch_sorted

__all__ = [
    "PRESETS",
    "StudentSpec",
    "parse_shape",
    "spec_from_name",
    "ExpertLinear",
    "Router",
    "Student",
    "StudentOutput",
    "dispatch_loop",
    "dispatch_sorted",
]

from .checkpoint import load_student, save_pretrained, student_from_hf  # noqa: E402
from .hf_loading import LoadReport, load_hf_model  # noqa: E402
from .teacher import Teacher, TeacherOutput  # noqa: E402

__all__ += ["load_student", "save_pretrained", "student_from_hf", "LoadReport", "load_hf_model", "Teacher",
            "TeacherOutput"]
