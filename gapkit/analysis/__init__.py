"""Statistics and reports on results tables: seed-aggregated scores, gap curves, the curse of capacity
gap and a method's lift of it as declared, Holm-corrected tests with their power (best teachers, onset
bounds, recovered fraction), the optimal teacher size fit, and the MiniMoE paper's numbers.
Definitions: docs/analysis.md."""

from .examples import run_predictions
from .gap import AXES, NOT_ESTIMABLE, gap_curve, gap_curves, teacher_scale_fit
from .verdicts import curse_test, lift_test
from .paper import paper_results
from .report import REPORT_TABLES, format_report, load_table, not_estimable, report, write_report
from .scores import student_scores, teacher_scores

__all__ = [
    "student_scores", "teacher_scores", "gap_curve", "gap_curves", "AXES", "curse_test", "lift_test",
    "teacher_scale_fit", "NOT_ESTIMABLE", "paper_results", "report", "format_report", "write_report", "load_table",
    "not_estimable", "REPORT_TABLES", "run_predictions",
]

# Figures (docs/figures.md): each returns a matplotlib Figure; plot_sweep writes every one a sweep supports.
from .plots import (plot_ablations, plot_curse, plot_expert_share, plot_gap_curve, plot_moe_vs_dense,  # noqa: E402
                    pareto_table, plot_pareto, plot_routing_training, plot_sweep, plot_top_tokens, student_points)
from .style import figure_style, save_figure  # noqa: E402

__all__ += ["plot_curse", "plot_moe_vs_dense", "plot_gap_curve", "plot_ablations", "plot_pareto", "pareto_table",
            "plot_expert_share",
            "plot_routing_training", "plot_top_tokens", "plot_sweep", "student_points", "figure_style", "save_figure"]

# Which expert each token goes to (docs/analysis.md, "Inspecting experts"), and the notebook views.
from .explorer import ExpertExplorer  # noqa: E402
from .inspection import (IdTokenizer, Inspection, inspect_tokens, load_for_inspection,  # noqa: E402
                         sentence_routing, token_expert_table)

__all__ += ["inspect_tokens", "load_for_inspection", "token_expert_table", "sentence_routing", "Inspection",
            "IdTokenizer", "ExpertExplorer"]
