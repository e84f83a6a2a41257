"""The notebooks in notebooks/ run end to end (papermill, a `python3` kernel) on the paper's numbers, on a
real (cut-budget) quickstart sweep where the README's `gapkit quickstart` puts it, and with their default
parameters in a fresh checkout (on the committed results/quickstart), write their figures, show the expected
tables, and fail on a bad parameter with gapkit's one sentence. The committed notebooks carry no outputs."""

import ast
import json
import os
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

import gapkit

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PAPER_FIGURES = "01_paper_figures.ipynb"
GAP_CURVE = "02_gap_curve_new_teacher.ipynb"
LOAD_BALANCE = "03_expert_load_balance.ipynb"
COMMITTED = ROOT / "results" / "quickstart"
QUICKSTART_TEACHERS = ["1L-32H-4A", "2L-64H-4A", "4L-128H-4A"]


@pytest.fixture(scope="session")
def kernel(tmp_path_factory):
    """A `python3` kernel spec that runs this interpreter and imports the gapkit under test (a kernel spec
    installed elsewhere may name another Python); found first through JUPYTER_PATH."""
    home = tmp_path_factory.mktemp("jupyter")
    spec = home / "kernels" / "python3"
    spec.mkdir(parents=True)
    source = str(Path(gapkit.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gapkit tests)", "language": "python", "env": {"PYTHONPATH": path},
    }))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(home))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
        mp.setenv("IPYTHONDIR", str(home / "ipython"))
        yield "python3"


def execute(name: str, where: Path, kernel: str, **parameters):
    """Run a notebook with papermill in ``where``; (the executed notebook, the execution error or None)."""
    out = where / f"executed-{name}"
    error = None
    try:
        papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, kernel_name=kernel,
                                   cwd=str(where), progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as err:
        error = err
    return nbformat.read(out, as_version=4), error


def texts(nb) -> str:
    """Everything the notebook printed or showed as text."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(output.data.get("text/plain", ""))
            elif output.output_type == "error":
                parts.append(f"{output.ename}: {output.evalue}")
    return "\n".join(parts)


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged `parameters` (papermill's convention)"
    return tagged[0]


# -- the committed notebooks ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, names", [
    (PAPER_FIGURES, {"paper_dir", "sweep_dir", "task", "out_dir"}),
    (GAP_CURVE, {"teacher", "students", "task", "methods", "stages", "agnostic_data", "seeds", "config",
                 "overrides", "sweep_dir", "run_now", "baseline", "effect", "out_dir"}),
    (LOAD_BALANCE, {"student", "sentence", "tokenizer", "layer", "block", "step", "interactive"}),
])
def test_committed_notebooks_carry_no_outputs_and_a_tagged_parameters_cell(name, names):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is None and c.outputs == [] for c in code), f"{name} was committed with outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.metadata.kernelspec.name == "python3"
    cell = parameters_cell(nb)
    assert cell is code[0], "the parameters come before any code"
    assigned = {t.id: node.value for node in ast.parse(cell.source).body for t in node.targets}
    assert set(assigned) == names
    if name == GAP_CURVE:  # a plan by default, never a training run; the quickstart's sweep, offline
        assert isinstance(assigned["run_now"], ast.Constant) and assigned["run_now"].value is False
        assert ast.literal_eval(assigned["config"]) == "quickstart"
    if name != PAPER_FIGURES:  # what the README's main command writes (the committed results stand in for it)
        assert ast.literal_eval(assigned["sweep_dir" if name == GAP_CURVE else "student"]) == "runs/quickstart"


# -- 01: the paper's figures ---------------------------------------------------------------------------
def test_paper_figures_notebook_draws_the_paper_alone(tmp_path, kernel):
    nb, error = execute(PAPER_FIGURES, tmp_path, kernel, out_dir=str(tmp_path / "figs"))
    assert error is None, error
    shown = texts(nb)
    assert (tmp_path / "figs" / "paper_curse.png").is_file() and (tmp_path / "figs" / "paper_curse.pdf").is_file()
    assert not (tmp_path / "figs" / "curse_overlay.png").exists()
    assert "No sweep_dir given" in shown and images(nb) == 1
    # the figure's numbers and the Table 1 excerpt: both teachers, the KD students and their scale
    assert "bert-base" in shown and "bert-large" in shown and "student_scale" in shown and "GLUE" in shown
    assert "0.05" in shown and "0.10" in shown  # Table 1's students: 5% of BERT-large, 10% of BERT-base
    assert "Curse of capacity gap per student" in shown and "not estimable" in shown
    # the paper's axes and layout, read back from the figure: linear x from 0 to 1.4, the panels stacked
    for row, panel in enumerate(["without assistant (MiniLM)", "with assistant (MiniLM w/ TA)"]):
        assert (f"panel (row {row}, column 0) {panel}: x linear from 0 to 1.4, student GFLOPs (paper convention: "
                f"linear layers, sequence length 128); y: GLUE average (dev), paper\n") in shown
    assert "column 1" not in shown and "row 2" not in shown  # two panels, one above the other
    assert "glue (glue, dev)" not in shown
    assert "exact, from the shape" in shown and "the figure's rounded value" in shown  # 0.04: no shape


def test_paper_figures_notebook_overlays_a_sweep(tmp_path, kernel, quickstart_results):
    nb, error = execute(PAPER_FIGURES, tmp_path, kernel, out_dir="figs", sweep_dir=str(quickstart_results.out))
    assert error is None, error
    assert {p.name for p in (tmp_path / "figs").iterdir()} == {
        "paper_curse.png", "paper_curse.pdf", "curse_overlay.png", "curse_overlay.pdf"}  # out_dir: relative to cwd
    shown = texts(nb)
    assert images(nb) == 2 and "No sweep_dir given" not in shown
    # the teachers are not BERT's: nothing to check against Table 1, said once
    assert "No teacher of these results is one of the paper's (bert-base, bert-large)" in shown
    # the sweep's synthetic score on its own y axis, the paper's GLUE average on the right, never mixed
    assert ("panel (row 0, column 0) without assistant (MiniLM): x linear from 0 to 1.4, student GFLOPs (paper "
            "convention: linear layers, sequence length 128); y: score (synthetic, dev), measured; right y: GLUE "
            "average (dev), paper") in shown
    assert "panel (row 2, column 0) plain logit KD" in shown and "sit at 0" in shown


# -- 02: the gap curve of a new teacher ----------------------------------------------------------------
def _checkout(quickstart_results) -> Path:
    """The folder that stands for a fresh checkout in which the README's `gapkit quickstart` ran."""
    assert quickstart_results.out.parts[-2:] == ("runs", "quickstart")
    return quickstart_results.out.parents[1]


def test_gap_curve_notebook_end_to_end_on_the_quickstart(kernel, quickstart_results):
    """After the README's main command (cut here to a few steps: its overrides), the default config and
    sweep_dir find the quickstart's runs: the notebook plans the same runs, finds them all done (run_now
    resumes nothing), and draws and estimates from them."""
    checkout = _checkout(quickstart_results)
    results = sorted(quickstart_results.out.glob("runs/*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    nb, error = execute(GAP_CURVE, checkout, kernel, overrides=list(quickstart_results.overrides), run_now=True,
                        out_dir=str(checkout / "figs"))
    assert error is None, error
    shown = texts(nb)
    assert "does not exist yet" not in shown  # runs/quickstart, not the committed stand-in
    assert f"Teachers: {', '.join(QUICKSTART_TEACHERS)}" in shown
    assert "Sweep 'quickstart': 9 runs (3 finetune, 6 task)" in shown  # the dry-run plan
    assert "Every planned run finished." in shown
    assert {p: p.stat().st_mtime_ns for p in results} == before and len(results) == 9  # nothing retrained
    assert "9 of the 9 planned runs have results" in shown and "0 other run(s)" in shown
    gap_table = next(o.data["text/plain"] for c in nb.cells for o in c.get("outputs", [])
                     if o.output_type == "execute_result" and "(teacher itself)" in o.data.get("text/plain", ""))
    header = gap_table.splitlines()[0].split()
    assert header == QUICKSTART_TEACHERS  # the gap table's columns: the teachers, smallest first
    for axis in ("teacher_params", "ratio_params"):
        assert (checkout / "figs" / f"gap_curve-{axis}.png").is_file()
    assert images(nb) == 2
    # the estimates, and what the data (one student shape, one seed) cannot support, with the reasons
    assert "Curse of capacity gap per student" in shown and "against kd" in shown
    assert "1 matched seed (needs 2 or more)" in shown  # one seed: no test, and the report says so
    assert "What the tests establish" in shown and "not tested" in shown
    assert "estimate(s) are not estimable from these results." in shown


def test_gap_curve_notebook_defaults_run_on_the_committed_quickstart(tmp_path, kernel):
    """A fresh clone, nothing run: every default parameter, no download; the committed results stand in for
    runs/quickstart, and the committed folder is only read (its figures are left as they are)."""
    committed = {p: p.stat().st_mtime_ns for p in COMMITTED.rglob("*")}
    nb, error = execute(GAP_CURVE, tmp_path, kernel)
    assert error is None, error
    shown = texts(nb)
    assert f"reading the committed results in {COMMITTED}" in shown
    assert f"Teachers: {', '.join(QUICKSTART_TEACHERS)}" in shown and "27 runs" in shown
    assert "The committed results hold 27 runs" in shown
    gap_table = next(o.data["text/plain"] for c in nb.cells for o in c.get("outputs", [])
                     if o.output_type == "execute_result" and "(teacher itself)" in o.data.get("text/plain", ""))
    assert "79.59" in gap_table and "98.05" in gap_table  # the teachers' scores in results/quickstart/README.md
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {"gap_curve-teacher_params.png",
                                                                  "gap_curve-ratio_params.png"}
    assert {p: p.stat().st_mtime_ns for p in COMMITTED.rglob("*")} == committed


def test_gap_curve_notebook_says_in_one_sentence_that_sweep_dir_holds_nothing(tmp_path, kernel):
    """The default sweep plans offline; reading results from a folder that does not exist stops the notebook
    with one sentence naming it."""
    missing = tmp_path / "no_such_sweep"
    nb, error = execute(GAP_CURVE, tmp_path, kernel, sweep_dir=str(missing))
    assert error is not None and error.ename == "DataError"
    assert error.evalue == (f"No results file or sweep folder at {missing}: give a sweep's output_dir (it holds "
                            f"results once the sweep has run) or a results .parquet/.csv file.")
    shown = texts(nb)
    assert f"Teachers: {', '.join(QUICKSTART_TEACHERS)}" in shown
    assert "27 runs" in shown and "run_now is False: nothing is trained" in shown
    assert not missing.exists()


# -- 03: expert load balance ---------------------------------------------------------------------------
def test_load_balance_notebook_defaults_after_the_quickstart(kernel, quickstart_results):
    """After the README's main command, the default student is the quickstart's first MiniMoE run, with
    weights: every view, the per-token ones included."""
    checkout = _checkout(quickstart_results)
    nb, error = execute(LOAD_BALANCE, checkout, kernel, interactive=False)
    assert error is None, error
    shown = texts(nb)
    assert "does not exist yet" not in shown and "The sweep's first MiniMoE run: task-" in shown
    assert "minimoe" in shown.split("The sweep's first MiniMoE run: ")[1].splitlines()[0]
    assert "routing: learned gate, eval mode (no gate noise)" in shown and "Token share per expert" in shown
    assert images(nb) == 3


def test_load_balance_notebook_defaults_on_the_committed_quickstart(tmp_path, kernel):
    """A fresh clone: the committed quickstart run has its routing record but no weights, so the notebook
    draws the training record's views and says why the per-token views are missing."""
    nb, error = execute(LOAD_BALANCE, tmp_path, kernel)
    assert error is None, error
    shown = texts(nb)
    assert f"reading the committed results in {COMMITTED}" in shown
    assert "The sweep's first MiniMoE run: task-1L-32H-4A-1L-32H-4A-minimoe-s0-synthetic-" in shown
    assert "Exported without weights: its training record only." in shown
    assert images(nb) == 2
