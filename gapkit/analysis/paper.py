"""The MiniMoE paper's published numbers (results/paper/) in the results-table schema.

Source: Zhang et al., "Lifting the Curse of Capacity Gap in Distilling Language Models", ACL 2023,
arXiv 2305.12129: the motivation figure (GLUE of MiniLM students from BERT-base and BERT-large, with and
without a teacher assistant) and Table 1 (teachers and plain-KD students). results/paper/README.md says
how the values were read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import DataError

__all__ = ["paper_results", "PAPER_DIR"]

PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"
# The paper's Hugging Face teachers -> gapkit's labels and presets (configs/sweeps/paper_glue.yaml).
TEACHERS = {"bert-base-uncased": "bert-base", "bert-large-uncased": "bert-large"}
# Table 1's students are 10% of BERT-base and 5% of BERT-large (similar sizes, shapes not given): one label,
# as the paper compares them, and never the empty label of the figure's unknown smallest student.
TABLE1_STUDENT = "table1-student"


@lru_cache(maxsize=None)
def _size(preset: str) -> tuple[int, float]:
    """(parameters of the encoder without a task head, GFLOPs on the paper's axis) of a shape."""
    from ..flops import describe

    row = describe(preset, convention="paper")
    return int(row["params_total"]), float(row["gflops"])


def _read(path: Path, columns: list[str]):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"The paper's reference numbers are not at {path} (they ship in the gapkit repository's "
                        f"results/paper/); pass folder= the folder that holds fig1_curse.csv and table1_excerpt.csv.")
    frame = pd.read_csv(path, comment="#", dtype={"student": "string"})
    if list(frame.columns) != columns:
        raise DataError(f"{path} has columns {', '.join(frame.columns)}; expected {', '.join(columns)}.")
    return frame


def paper_results(folder: str | Path | None = None):
    """The paper's numbers as results-table rows, to overlay on measured ones.

    Args:
        folder: the folder of ``fig1_curse.csv`` and ``table1_excerpt.csv`` (default: the repository's
            results/paper/).
    Returns:
        A DataFrame with :data:`gapkit.sweep.table.COLUMNS` plus ``source`` (``"paper"``) and
        ``student_scale`` (Table 1's student/teacher size ratio). ``task`` and ``metric`` are ``glue``,
        ``convention`` is ``paper``, ``split`` is ``dev``, ``model`` is ``best``, seeds are empty (one value
        per point); ``sweep`` names the source (``paper:fig1``, ``paper:table1``). Teachers are
        ``bert-base``/``bert-large``; teacher rows (role ``teacher``, stage ``finetune``) hold the teachers'
        own GLUE. Parameter counts and the teachers' GFLOPs are computed from the shapes; student GFLOPs
        are the figure's values. The figure's smallest student (0.04 GFLOPs) has no shape (empty); Table 1's
        KD students (10% of BERT-base, 5% of BERT-large: similar sizes the paper compares as one) are
        ``student = "table1-student"`` with their ``student_scale``, sizes empty.
    Raises:
        DataError: a file is missing or has other columns.
    """
    import pandas as pd

    from ..sweep.table import COLUMNS

    folder = Path(folder) if folder is not None else PAPER_DIR
    fig1 = _read(folder / "fig1_curse.csv", ["gflops", "student", "teacher", "method", "glue"])
    table1 = _read(folder / "table1_excerpt.csv", ["method", "teacher", "student_scale", "glue"])
    unknown = sorted((set(fig1.teacher) | set(table1.teacher)) - set(TEACHERS))
    if unknown:
        raise DataError(f"Unknown teacher(s) {', '.join(unknown)} in {folder}; known: {', '.join(TEACHERS)}.")

    def teacher_columns(hub_name: str) -> dict:
        label = TEACHERS[hub_name]
        params, gflops = _size(label)
        return dict(teacher=label, teacher_kind="pretrained", teacher_family="bert", teacher_params=params,
                    teacher_gflops=gflops)

    common = dict(convention="paper", task="glue", split="dev", metric="glue", model="best", status="completed",
                  source="paper")
    rows = []
    for r in fig1.itertuples(index=False):
        student = None if pd.isna(r.student) else str(r.student)
        params = _size(student)[0] if student else None
        rows.append(dict(common, **teacher_columns(r.teacher), sweep="paper:fig1", role="student", stage="task",
                         student=student, experts="dense", method=r.method, params_total=params, params_active=params,
                         gflops=float(r.gflops), value=float(r.glue), run_dir=str(folder / "fig1_curse.csv"),
                         run=f"paper:fig1:{TEACHERS[r.teacher]}:{r.method}:{r.gflops}"))
    for r in table1.itertuples(index=False):
        teacher = teacher_columns(r.teacher)
        where = dict(sweep="paper:table1", run=f"paper:table1:{teacher['teacher']}:{r.method}",
                     run_dir=str(folder / "table1_excerpt.csv"), student_scale=float(r.student_scale),
                     value=float(r.glue))
        if r.method == "teacher":
            rows.append(dict(common, **teacher, **where, role="teacher", stage="finetune", student=teacher["teacher"],
                             experts="dense", method="finetune", params_total=teacher["teacher_params"],
                             params_active=teacher["teacher_params"], gflops=teacher["teacher_gflops"]))
        else:  # student_scale x its teacher's size, shape not given; the paper compares the two as one student
            rows.append(dict(common, **teacher, **where, role="student", stage="task", student=TABLE1_STUDENT,
                             experts="dense", method=r.method))
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "source", "student_scale"])
    for col in ("teacher_params", "params_total", "params_active", "step", "seed"):
        frame[col] = frame[col].astype("Int64")
    for col in ("value", "gflops", "teacher_gflops", "wall_time_s", "student_scale"):
        frame[col] = frame[col].astype("float64")
    return frame
