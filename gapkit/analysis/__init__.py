"""Statistics and reports on results tables: seed-aggregated scores, gap curves, the curse of capacity
gap quantified (best teacher, onset, recovered fraction, with bootstrap intervals), the optimal teacher
size fit, and the MiniMoE paper's published numbers. Definitions: docs/analysis.md."""

from .gap import AXES, NOT_ESTIMABLE, curse_onset, gap_curve, gap_curves, recovered_gap, teacher_scale_fit
from .paper import paper_results
from .report import REPORT_TABLES, format_report, load_table, report, write_report
from .scores import student_scores, teacher_scores

__all__ = [
    "student_scores", "teacher_scores", "gap_curve", "gap_curves", "AXES", "curse_onset", "recovered_gap",
    "teacher_scale_fit", "NOT_ESTIMABLE", "paper_results", "report", "format_report", "write_report", "load_table",
    "REPORT_TABLES",
]
