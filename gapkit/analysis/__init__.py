"""Statistics and reports on results tables: seed-aggregated scores, gap curves, the curse of capacity
gap and a method's lift of it as declared, Holm-corrected tests with their power (best teachers, onset
bounds, recovered fraction), the optimal teacher size fit, and the MiniMoE paper's numbers.
Definitions: docs/analysis.md."""

from ..lazy import lazy_exports
from .report import report  # eager: importing gapkit.analysis.report later would bind the module to this name

# Figures (docs/figures.md) each return a matplotlib Figure; plot_sweep writes every one a sweep supports.
# Which expert each token goes to (docs/analysis.md, "Inspecting experts"), and the notebook views.
__getattr__, __dir__, _names = lazy_exports(__name__, {
    ".scores": ("student_scores", "teacher_scores"),
    ".gap": ("gap_curve", "gap_curves", "AXES", "teacher_scale_fit", "NOT_ESTIMABLE"),
    ".verdicts": ("curse_test", "lift_test"),
    ".paper": ("paper_results",),
    ".report": ("format_report", "write_report", "load_table", "not_estimable", "REPORT_TABLES"),
    ".examples": ("run_predictions",),
    ".plots": ("plot_curse", "plot_moe_vs_dense", "plot_gap_curve", "plot_ablations", "plot_pareto", "pareto_table",
               "plot_expert_share", "plot_routing_training", "plot_top_tokens", "plot_sweep", "student_points"),
    ".style": ("figure_style", "save_figure"),
    ".explorer": ("ExpertExplorer",),
    ".inspection": ("inspect_tokens", "load_for_inspection", "token_expert_table", "sentence_routing", "Inspection",
                    "IdTokenizer"),
})
__all__ = ["report"] + _names
