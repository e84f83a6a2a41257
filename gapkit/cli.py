"""The ``gapkit`` command. Each verb is a thin shell over public functions.

    gapkit flops [MODEL ...] [--seq-len N] [--convention macs|flops|paper] [--json]
    gapkit distill CONFIG [--set KEY=VALUE ...] [--resume]
    gapkit pipeline CONFIG [--set KEY=VALUE ...] [--resume]
    gapkit sweep CONFIG [--executor inline|local|slurm] [--replan] [--dry-run [--pilot DIR --seeds-for EFFECT]]
    gapkit status DIR
    gapkit results DIR [--csv]
    gapkit plot DIR [--out DIR] [--routing representative|all|none] [--paper]
    gapkit report DIR|FILE [--out DIR] [--metric M] [--split S] [--baseline METHOD] [--seeds-for EFFECT]
    gapkit inspect STUDENT SENTENCE [SENTENCE ...] [--tokenizer NAME_OR_FOLDER|ids] [--json]
    gapkit --version

Every config key is described in docs/config.md (``python -m gapkit.configdoc`` prints it).

To add a verb: write ``_add_<verb>_arguments(parser)`` and ``_run_<verb>(args) -> int`` (exit status)
and add one entry to :data:`COMMANDS`. Errors gapkit raises on purpose (:class:`GapkitError`) become one
line on stderr, ``gapkit: error: ...``, and exit status 2 for bad input (1 for other failures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from .errors import GapkitError

__all__ = ["COMMANDS", "main"]


# ----------------------------------------------------------------------------------------------------
# gapkit flops
# ----------------------------------------------------------------------------------------------------
# The paper's students and teachers (docs/method.md), and the default MiniMoE.
DEFAULT_FLOPS_MODELS = ("2L-192H", "2L-384H", "3L-384H", "4L-384H", "6L-384H", "12L-384H", "bert-base",
                        "bert-large", "3L-384H-1,4E")
CONVENTION_HELP = {
    "macs": "multiply-accumulates of every matmul, attention scores included (fvcore's unit)",
    "flops": "2 x macs (torch.utils.flop_counter's unit)",
    "paper": "MACs of the encoder's linear layers only, one expert, no gate (the MiniMoE paper's axis)",
}


def _add_flops_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="preset (bert-base, 3L-384H ...), shape spec (3L-384H-1,4E), local model folder "
                             "or Hugging Face Hub name; default: the paper's students and teachers")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128, the paper's)")
    parser.add_argument("--convention", choices=tuple(CONVENTION_HELP), default="macs",
                        help="; ".join(f"{k}: {v}" for k, v in CONVENTION_HELP.items()) + " (default macs)")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")


def _run_flops(args: argparse.Namespace) -> int:
    from .errors import ModelError
    from .flops import describe, resolve_model

    if args.seq_len < 1:
        raise ModelError(f"--seq-len must be a positive integer, got {args.seq_len}.")
    # Resolve every model first, so that a bad name fails before anything is counted.
    resolved = [resolve_model(ref) for ref in (args.models or DEFAULT_FLOPS_MODELS)]
    for r in resolved:
        if args.seq_len > r.spec.max_positions:
            raise ModelError(f"--seq-len {args.seq_len} exceeds the {r.spec.max_positions} positions of model {r.ref!r}.")
    rows = [describe(r, seq_len=args.seq_len, convention=args.convention) for r in resolved]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_flops_table(rows, args.convention, args.seq_len))
    return 0


def _number(value: float | None, digits: int = 1) -> str:
    """``digits`` decimals, or 3 significant digits for values too small to show that way (tiny models);
    ``-`` for a missing value."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.3g}"


def _align(header: tuple[str, ...], body: list[tuple[str, ...]], text_columns: set[int]) -> list[str]:
    """Header, rule and rows of an aligned table: text columns left-aligned, numbers right-aligned."""
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def fmt(line):
        return "  ".join(c.ljust(w) if i in text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths))).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)]


def format_flops_table(rows: list[dict], convention: str, seq_len: int) -> str:
    """An aligned text table of :func:`gapkit.flops.describe` rows: a title naming the convention and the
    sequence length, the table (its convention in the GFLOPs header) and a note defining the convention."""
    header = ("model", "layers", "hidden", "experts", "params total (M)", "params active (M)",
              f"GFLOPs ({convention})")
    body = [
        (r["model"], str(r["layers"]), str(r["hidden"]), r["experts"], _number(r["params_total"] / 1e6),
         _number(r["params_active"] / 1e6), _number(r["gflops"], 2))
        for r in rows
    ]
    title = f"FLOPs and parameters per sequence: convention {convention}, sequence length {seq_len}, batch 1"
    lines = [title, "", *_align(header, body, text_columns={0, 3}), ""]
    others = " or ".join(f"--convention {c}" for c in CONVENTION_HELP if c != convention)
    lines.append(f"{convention}: {CONVENTION_HELP[convention]}. Other units: {others}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# gapkit distill / gapkit pipeline
# ----------------------------------------------------------------------------------------------------
CONFIG_REFERENCE = ("Every config key (its type, default and meaning) is listed in docs/config.md of the gapkit "
                    "repository; `python -m gapkit.configdoc` prints the same reference.")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = CONFIG_REFERENCE
    parser.add_argument("config", help="a YAML/JSON run config (see configs/ and docs/config.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set train.lr=1e-4 --set output_dir=runs/x (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _print_result(result) -> None:
    """One line per run: status, steps, the selection metric of the best weights, the folder."""
    metric = result.selection.get("metric")
    best = ", ".join(f"{r['split']}/{r['metric']}={r['value']:.4g}" for r in result.metrics
                     if r["model"] == "best" and isinstance(r["value"], (int, float)))
    print(f"{result.status}: {result.steps} steps in {result.wall_time_s:.0f} s; best {metric} ({best}) at step "
          f"{result.best_step}; run folder {result.run_dir}")


def _run_distill(args: argparse.Namespace) -> int:
    from .distill import DistillSpec

    spec = DistillSpec.from_file(args.config, args.overrides)  # a bad config is said before torch is imported
    from .distill import run

    _print_result(run(spec, resume=args.resume, progress=not args.quiet))
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    from .distill import PipelineSpec, run_pipeline

    spec = PipelineSpec.from_file(args.config, args.overrides)
    results = run_pipeline(spec, resume=args.resume, progress=not args.quiet)
    for result in results:
        _print_result(result)
    rows = [r.summary_row() for r in results]
    print(f"\n{format_summary_table(rows)}\n\n{next_steps(rows)}")
    return 0


SUMMARY_TEXT_COLUMNS = {0, 1, 2, 6, 8}  # stage, name, model, metric, run folder


def format_summary_table(rows: list[dict]) -> str:
    """An aligned text table of runs (``RunResult.summary_row()`` dicts), one row per run.

    Args:
        rows: dicts with keys ``stage, name, model, params_total, params_active, gflops, convention,
            metric, value, run_dir``; a missing number (None) shows as ``-``.
    Returns:
        The table, its GFLOPs header naming the convention, then a note defining the convention. Rows
        counted under different conventions name theirs in each cell instead.
    """
    conventions = sorted({r["convention"] for r in rows if r.get("convention")})
    one = conventions[0] if len(conventions) == 1 else None
    header = ("stage", "name", "model", "params total (M)", "params active (M)",
              f"GFLOPs ({one})" if one else "GFLOPs", "metric", "value", "run folder")

    def gflops(r):
        cell = _number(r["gflops"], 2)
        return cell if one or r["gflops"] is None else f"{cell} ({r['convention']})"

    body = [
        (str(r["stage"]), str(r["name"]), str(r["model"]),
         _number(None if r["params_total"] is None else r["params_total"] / 1e6),
         _number(None if r["params_active"] is None else r["params_active"] / 1e6),
         gflops(r), str(r["metric"] or "-"), _number(r["value"], 2), str(r["run_dir"]))
        for r in rows
    ]
    lines = _align(header, body, SUMMARY_TEXT_COLUMNS)
    notes = [f"{c}: {CONVENTION_HELP[c]}." for c in conventions if c in CONVENTION_HELP]
    return "\n".join([*lines, *([""] + notes if notes else [])])


def next_steps(rows: list[dict]) -> str:
    """What a newcomer can do after a pipeline: the commands, filled in with the pipeline's own runs."""
    import shlex

    # The saved models (their config holds the real vocabulary and heads), not the shape names.
    from .distill.runfiles import RunDir

    models = list(dict.fromkeys(str(RunDir(str(r["run_dir"])).best_dir) for r in rows
                                if RunDir(str(r["run_dir"])).has_best()))
    conventions = {r.get("convention") for r in rows}
    other = next((c for c in ("paper", "macs") if c not in conventions), "flops")
    lines = ["Next steps:"]
    if models:
        lines.append(f"  gapkit flops {' '.join(map(shlex.quote, models))} --convention {other}"
                     f"    # these models' FLOPs in another unit")
    lines.append("  gapkit distill configs/synthetic_teacher.yaml --set train.lr=3e-4"
                 "    # one run of your own; every key: docs/config.md")
    moe_runs = [RunDir(str(r["run_dir"])).routing() for r in rows if RunDir(str(r["run_dir"])).routing()]
    if moe_runs:
        lines.append(f"  python -c \"import pandas as pd; print(pd.read_parquet('{moe_runs[-1]}'))\""
                     f"    # how the experts share the tokens")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# gapkit sweep / status / results
# ----------------------------------------------------------------------------------------------------
def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a sweep YAML file (see configs/sweeps/ and docs/sweeps.md)")
    parser.add_argument("--executor", choices=("inline", "local", "slurm"),
                        help="where the runs go (default: the file's executor.kind, else inline)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the planned runs in dependency order, with sizes and compute; train nothing")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a sweep setting, e.g. --set output_dir=runs/x --set seeds=[0,1]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--replan", action="store_true",
                        help="plan a sweep folder anew although its earlier plan has started runs this one drops (they "
                             "stay in runs/ but leave the results and status); without it such a reuse is refused")
    parser.add_argument("--pilot", metavar="DIR",
                        help="with --dry-run and --seeds-for: a finished (pilot) sweep whose variances say how many "
                             "seeds each student needs")
    parser.add_argument("--throughput", action="append", default=[], metavar="SOURCE",
                        help="with --dry-run: the rates behind its GPU-hours: a throughput CSV (benchmarks/throughput.py; "
                             "default results/bench/throughput.csv when it exists), MODEL:PHASE=TOKENS_PER_S (phase "
                             "train or forward) or mfu=F (the assumption's); repeatable")
    parser.add_argument("--seeds-for", type=float, default=None, metavar="EFFECT",
                        help="with --pilot: the curse (and lift) size in metric points to detect with 80%% power")


def _run_sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepSpec, format_plan, plan

    if (args.pilot is None) != (args.seeds_for is None) or (args.pilot and not args.dry_run):
        from .errors import ConfigError

        raise ConfigError("--pilot and --seeds-for go together, with --dry-run: gapkit sweep NEW.yaml --dry-run "
                          "--pilot PILOT_DIR --seeds-for 0.5.")
    pilot = None
    if args.pilot:  # read (and check) the pilot before anything is planned
        from .analysis import load_table
        from .analysis.report import seeds_plan

        pilot = seeds_plan(load_table(args.pilot), args.seeds_for)
    from .sweep.cost import Throughput

    if args.throughput and not args.dry_run:
        from .errors import ConfigError

        raise ConfigError("--throughput sets the rates of the dry run's GPU-hours: add --dry-run.")
    throughput = Throughput.parse(args.throughput) if args.dry_run else None
    spec = SweepSpec.from_file(args.config, args.overrides)
    nodes = plan(spec)
    from .sweep.plan import plan_changes

    changes = plan_changes(spec.output_dir, nodes, spec)  # the folder's earlier plan, if any
    dropped = changes is not None and bool(changes.dropped)
    if args.dry_run:
        print(format_plan(nodes, spec, throughput))
        if dropped:
            print("\nNote: " + changes.sentence(spec.output_dir))
        if pilot is not None:
            from .analysis.report import format_seeds_plan

            print("\n" + format_seeds_plan(pilot, args.seeds_for, args.pilot, len(spec.seeds),
                                            len(spec.teacher_seeds())))
        return 0
    if dropped and not args.replan:  # before anything is written: the earlier plan and table stay as they are
        from .errors import ConfigError

        raise ConfigError(changes.sentence(spec.output_dir))
    if dropped:
        print(f"Replanning {spec.output_dir}: {len(changes.dropped)} run(s) of its earlier plan are left out of the "
              f"results and status (their folders stay in runs/).", file=sys.stderr)
    from .sweep import run_sweep  # torch from here on: the plan is checked, and a bad one said, without it

    report = run_sweep(spec, executor=args.executor, progress=not args.quiet, replan=args.replan)
    import pandas as pd

    from .sweep.table import build_table, summary

    table = summary(build_table(spec.output_dir))
    if not table.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print("\nStudent score (best weights on dev; seeds averaged) per teacher:")
            print(table.to_string())
    print(f"\nResults: {spec.output_dir}/results.csv (one row per run, split and metric); "
          f"gapkit status {spec.output_dir}; gapkit results {spec.output_dir}")
    if report.failures:
        print(f"\n{len(report.failures)} run(s) did not finish:", file=sys.stderr)
        for node_id, status, reason in report.failures:
            print(f"  {status}: {node_id}: {reason}", file=sys.stderr)
        return 1
    return 0


def _add_dir_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a sweep's output_dir")


def _run_status(args: argparse.Namespace) -> int:
    from .sweep.status import sweep_progress, sweep_status, teacher_lines

    sweep, nodes, statuses, gate = sweep_status(args.dir)  # teachers_must_beat applied: skipped runs say why
    progress = sweep_progress(nodes, statuses, args.dir, sweep.get("executor"))
    states = [(n, *st) for n, st in zip(nodes, statuses)]
    counts = {k: sum(1 for _, s, _ in states if s == k) for k in ("done", "running", "interrupted", "stale",
                                                                     "failed", "skipped", "pending")}
    width = 40
    filled = round(width * counts["done"] / max(1, len(nodes)))
    print(f"sweep {sweep.get('name')}: [{'#' * filled}{'.' * (width - filled)}] {counts['done']}/{len(nodes)} done, "
          f"{counts['running']} running, {counts['interrupted']} interrupted, "
          + (f"{counts['stale']} stale, " if counts["stale"] else "")
          + f"{counts['failed']} failed, " + (f"{counts['skipped']} skipped, " if counts["skipped"] else "")
          + f"{counts['pending']} pending")
    for node, state, reason in states:
        if state != "done":
            detail = reason or progress.detail(node.id)  # running/interrupted: step/total, rate, time left
            print(f"  {state:8s} {node.id}" + (f": {detail}" if detail else ""))
    print(progress.sentence())
    below = teacher_lines(gate)  # teachers not shown above the majority class (chance-level ones among them)
    if below:
        print("teachers not shown above the majority class on dev (gapkit.analysis.teacher_check, alpha 0.05):")
        print("\n".join(below))
    return 0


def _add_results_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a sweep's output_dir")
    parser.add_argument("--csv", action="store_true", help="print the whole table as CSV")
    parser.add_argument("--export", metavar="OUT",
                        help="also write the table to OUT with each run's result.json and dev predictions (no "
                             "weights), run_dir relative to OUT: a folder to commit that gapkit report reads as "
                             "it reads the sweep")


def _run_results(args: argparse.Namespace) -> int:
    import pandas as pd

    from .sweep.table import summary, write_table

    table = write_table(args.dir)  # rebuilt from the run folders, whatever happened before
    if args.export:
        from .sweep.table import export_table

        export_table(args.dir, args.export, table)
        print(f"Exported to {args.export}: results.csv/.parquet and runs/<run>/ (result.json, dev predictions).",
              file=sys.stderr)
    if args.csv:
        print(table.to_csv(index=False), end="")
        return 0
    grid = summary(table)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(grid.to_string() if not grid.empty else "No finished student run yet.")
    print(f"\n{len(table)} rows in {args.dir}/results.csv and results.parquet (one per run, split and metric).")
    return 0


# ----------------------------------------------------------------------------------------------------
# gapkit plot
# ----------------------------------------------------------------------------------------------------
def _add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "What each figure shows and which results it needs: docs/figures.md."
    parser.add_argument("dir", metavar="DIR", help="a sweep's output_dir (its results.parquet)")
    parser.add_argument("--out", help="folder for the figures (default: DIR/figures)")
    parser.add_argument("--routing", choices=("representative", "all", "none"), default="representative",
                        help="MiniMoE runs that get routing figures: one per MiniMoE method (largest teacher and "
                             "student, first seed; the default), all, or none")
    parser.add_argument("--paper", action="store_true",
                        help="overlay the MiniMoE paper's published numbers on the curse figure")


def _run_plot(args: argparse.Namespace) -> int:
    from .analysis.plots import plot_sweep

    paper = None
    if args.paper:
        from .analysis import paper_results

        paper = paper_results()
    written, skipped = plot_sweep(args.dir, args.out, routing=args.routing, paper=paper)
    for path in written:
        print(f"wrote {path}")
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    return 0


# ----------------------------------------------------------------------------------------------------
# gapkit report
# ----------------------------------------------------------------------------------------------------
def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("The declared tests (curse, lift, best teachers, onset bounds, power) and what they assume: "
                     "docs/analysis.md.")
    parser.add_argument("dir", metavar="DIR",
                        help="a sweep's output_dir (its results.parquet), or a results .parquet/.csv file")
    parser.add_argument("--out", help="folder for the CSV files (default: DIR/report, or report/ beside the file)")
    parser.add_argument("--metric", help="the metric to score (default: each task's primary metric)")
    parser.add_argument("--split", help="the split to score (default: dev, dev_matched for MNLI)")
    parser.add_argument("--baseline", default=None,
                        help="the dense method whose curse the others lift (default: minilm, or kd when the "
                             "table has no minilm students)")
    parser.add_argument("--family", help="only the teachers of this teacher_family (default: all teachers of a task)")
    parser.add_argument("--level", type=float, default=0.95,
                        help="confidence level; 1 - level is the tests' alpha (default 0.95)")
    parser.add_argument("--seeds-for", type=float, default=None, metavar="EFFECT",
                        help="how many seeds (or teacher fine-tunes) detect a curse or lift of EFFECT metric points "
                             "with 80%% power, from this sweep's variances")
    parser.add_argument("--wide", action="store_true",
                        help="print every table in one piece (default: lines of at most 120 columns, wide tables in "
                             "column groups)")
    parser.add_argument("--no-examples", action="store_true",
                        help="leave the dev examples out of the variance (seeds only; conditional on this dev set)")


def _run_report(args: argparse.Namespace) -> int:
    from .analysis import format_report, load_table, report, write_report
    from .analysis.report import WIDTH, default_baseline, wrap_lines
    from .analysis.scores import require_scores

    table = load_table(args.dir)
    require_scores(table, str(args.dir))  # one sentence for a table with nothing to report
    args.baseline = args.baseline or default_baseline(table)
    tables = report(table, metric=args.metric, split=args.split, baseline=args.baseline, family=args.family,
                    level=args.level, effect=args.seeds_for, examples=not args.no_examples)
    where = Path(args.dir)
    out = Path(args.out) if args.out else (where if where.is_dir() else where.parent) / "report"
    print(format_report(tables, level=args.level, baseline=args.baseline, width=None if args.wide else WIDTH))
    paths = write_report(tables, out)
    print("\n" + wrap_lines(f"Wrote {len(paths)} tables to {out}/: {', '.join(p.name for p in paths)}.",
                            None if args.wide else WIDTH))
    return 0


# ----------------------------------------------------------------------------------------------------
# gapkit inspect
# ----------------------------------------------------------------------------------------------------
def _add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Eval-mode routing (no gate noise). A sentence longer than the student's positions is truncated, "
                     "with a warning. The API and an example: docs/analysis.md, 'Inspecting experts'.")
    parser.add_argument("student", metavar="STUDENT",
                        help="a run folder (its best/ weights), a saved student folder or a released MiniMoE "
                             "checkpoint folder")
    parser.add_argument("sentences", nargs="+", metavar="SENTENCE", help="text to route (several allowed)")
    parser.add_argument("--tokenizer", metavar="NAME_OR_FOLDER",
                        help="the tokenizer, when none is saved beside the weights or configured by the run (it "
                             "overrides those); 'ids' to type token ids")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON row per sentence, token, layer and block: sentence (0-based), position, "
                             "token, token_id, layer, block, expert, gate_prob, mode")


def format_token_table(frame) -> str:
    """Aligned text tables of :func:`gapkit.analysis.inspect_tokens` rows, one per sentence: tokens as rows,
    one column per layer and MoE block (``L0.ffn``), each cell the expert and its gate probability."""
    from .analysis import token_expert_table

    grid = token_expert_table(frame)
    blocks = [c for c in grid.columns if c not in ("sentence", "position", "token", "token_id")]
    parts = []
    for sentence, rows in grid.groupby("sentence", sort=True):
        header = ("pos", "token", "id", *blocks)
        body = [(str(position), token, str(token_id), *cells) for position, token, token_id, *cells in
                rows[["position", "token", "token_id", *blocks]].itertuples(index=False, name=None)]
        parts.append("\n".join([f"sentence {sentence + 1}:", *_align(header, body, text_columns={1})]))
    return "\n\n".join(parts)


def _run_inspect(args: argparse.Namespace) -> int:
    import warnings

    from .analysis import inspect_tokens, load_for_inspection

    inspection = load_for_inspection(args.student, tokenizer=args.tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = inspect_tokens(inspection.student, inspection.tokenizer, args.sentences)
    for warning in caught:
        print(f"gapkit: warning: {warning.message}", file=sys.stderr)
    if args.json:
        for note in inspection.notes:
            print(f"gapkit: note: {note}", file=sys.stderr)
        rows = frame.to_dict("records")
        print("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]")  # one row a line, a JSON list
        return 0
    print(inspection.describe())
    print("cells: expert and gate probability (e2 0.91 = expert 2, probability 0.91); attn: attention block, ffn: FFN "
          "block\n")
    print(format_token_table(frame))
    return 0


# ----------------------------------------------------------------------------------------------------
# gapkit quickstart
# ----------------------------------------------------------------------------------------------------
QUICKSTART = Path(__file__).with_name("sweep") / "quickstart.yaml"


def _add_quickstart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="the sweep folder (default runs/quickstart)")
    parser.add_argument("--executor", choices=("inline", "local", "slurm"), default=None,
                        help="where the runs go (default: the quickstart's own, local: 2 single-threaded worker "
                             "processes, which a busy machine slows only as much as its load)")
    parser.add_argument("--print-config", action="store_true", help="print the quickstart's sweep file and exit")
    parser.add_argument("--replan", action="store_true",
                        help="go on when the folder holds runs of an earlier quickstart plan that this one drops "
                             "(they leave its results; their folders stay)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the quickstart's sweep (as gapkit sweep --set)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_quickstart(args: argparse.Namespace) -> int:
    import pandas as pd

    from .sweep import SweepSpec, build_table, run_sweep
    from .sweep.table import summary

    if args.print_config:
        print(QUICKSTART.read_text(), end="")
        return 0
    spec = SweepSpec.from_file(QUICKSTART, [f"output_dir={args.out}", *args.overrides])
    print(f"gapkit quickstart: {spec.name}, a small teacher x student sweep on gapkit's synthetic task, offline on "
          f"CPU (a few minutes): teachers of {len(spec.teacher_entries())} sizes trained from scratch, then dense "
          f"and MiniMoE students ({', '.join(spec.student_specs())}) distilled from each, {len(spec.seeds)} "
          f"seed(s); then the curse and lift tests on the results.\n")
    report = run_sweep(spec, executor=args.executor, progress=not args.quiet, replan=args.replan)
    table = build_table(spec.output_dir)
    grid = summary(table)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print("\nStudent dev score (best weights, seeds averaged) per teacher; the first row is each teacher's own:")
        print(grid.to_string())
    try:  # the declared tests: what the table above establishes, and what it does not
        from .analysis.report import report as report_tables
        from .analysis.report import summary as verdicts

        print("\n" + verdicts(report_tables(table)))
    except GapkitError as err:
        print(f"\nThe curse and lift tests could not run on these results: {err}", file=sys.stderr)
    try:
        from .analysis.plots import plot_sweep

        written, _ = plot_sweep(spec.output_dir, None, routing="representative")
        if written:
            print(f"\nFigures: {Path(written[0]).parent} ({len(written)} files, PNG and PDF).")
    except Exception as err:  # noqa: BLE001 - the table is the result; a figure failing is said, not fatal
        print(f"\nFigures were not written: {err}", file=sys.stderr)
    print(f"\nResults: {spec.output_dir}/results.csv (one row per run, split and metric).\n"
          f"Next: gapkit report {spec.output_dir}   (the curse and lift tests, their power, fits)\n"
          f"      gapkit quickstart --print-config > my_sweep.yaml   (then your teachers: docs/sweeps.md)")
    if report.failures:
        print(f"\n{len(report.failures)} run(s) did not finish: gapkit status {spec.output_dir}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------
class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "flops": Command("FLOPs and parameters of models, under a named convention",
                     _add_flops_arguments, _run_flops),
    "distill": Command("fine-tune or distil one run (task-agnostic or task-specific) from a config file",
                       _add_run_arguments, _run_distill),
    "pipeline": Command("run several stages in order (e.g. a teacher-assistant chain) from a config file",
                        _add_run_arguments, _run_pipeline),
    "quickstart": Command("a complete small sweep on the synthetic task: teachers, dense and MiniMoE students, "
                          "the gap table and figures (offline, CPU, minutes)", _add_quickstart_arguments,
                          _run_quickstart),
    "sweep": Command("run a teacher x student x method grid (or --dry-run to see its plan)",
                     _add_sweep_arguments, _run_sweep),
    "status": Command("how far a sweep is: done, running, failed, pending", _add_dir_arguments, _run_status),
    "results": Command("a sweep's results table, rebuilt from its run folders", _add_results_arguments,
                       _run_results),
    "plot": Command("every figure a sweep's results support (PNG and PDF), naming the ones it skips",
                    _add_plot_arguments, _run_plot),
    "report": Command("statistics of a results table: scores over seeds, the curse and lift tests, power, gap curves",
                      _add_report_arguments, _run_report),
    "inspect": Command("each token's expert and gate probability in a MiniMoE student, per layer and block",
                       _add_inspect_arguments, _run_inspect),
}


class _Parser(argparse.ArgumentParser):
    """argparse with gapkit's error format: one line ``gapkit: error: ...`` (no usage block), exit 2."""

    def error(self, message: str):
        self.exit(2, f"gapkit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = _Parser(prog="gapkit", description="Curse-of-capacity-gap toolkit.")
    parser.add_argument("--version", action="version", version=f"gapkit {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(verbs.add_parser(name, help=command.help, description=command.help))
    return parser


def _quiet_transformers() -> None:
    """Keep transformers' load reports and weight-loading bars off the command line's output (its
    warnings about real problems still show), through the environment variables both libraries read when
    they are first imported: the light verbs never import them, so nothing is set up here eagerly."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # the Hub client's retry notices too (an unknown name then fails with gapkit's one sentence)
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    if "transformers" in sys.modules:  # already imported (gapkit.cli.main called from Python): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the ``gapkit`` command line.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.
    Returns:
        The exit status: 0 on success, 2 for bad input (usage, unknown model ...), 1 for other
        gapkit failures.
    """
    parser = build_parser()
    _quiet_transformers()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed its one-line error (or --help, --version)
        return int(exit_.code or 0)
    try:
        return COMMANDS[args.command].run(args)
    except GapkitError as err:
        message = " ".join(str(err).split())  # always one line
        print(f"gapkit: error: {message}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
