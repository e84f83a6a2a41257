"""The teacher ladder (configs/sweeps/bert_ladder.yaml), the dry run's GPU-hours (gapkit.sweep.cost) against
hand-worked numbers, the BERT miniature presets, and benchmarks/gpu.sh's CPU dry run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gapkit.cli import main
from gapkit.distill import DistillSpec
from gapkit.errors import ConfigError
from gapkit.models.spec import HUB_CHECKPOINTS, spec_from_name
from gapkit.sweep import SweepSpec, format_plan, plan
from gapkit.sweep.cost import Assumption, Throughput
from gapkit.sweep.plan import estimate

REPO = Path(__file__).resolve().parents[1]
LADDER = REPO / "configs" / "sweeps" / "bert_ladder.yaml"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No Hub: every shape here must be known without a download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- the presets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("L", [2, 4, 6, 8, 10, 12])
@pytest.mark.parametrize("H", [128, 256, 512, 768])
def test_every_bert_miniature_has_its_published_shape(L, H):
    spec = spec_from_name(f"google/bert_uncased_L-{L}_H-{H}_A-{H // 64}")
    assert (spec.layers, spec.hidden, spec.heads, spec.head_size, spec.ffn, spec.vocab_size) == (L, H, H // 64, 64,
                                                                                                  4 * H, 30522)


def test_a_hub_checkpoint_of_known_shape_is_pretrained_weights_never_a_random_model(tmp_path):
    """Known shapes are for planning; as a run's student such a name loads the checkpoint."""
    for name in ("google/bert_uncased_L-4_H-256_A-4", "bert-large-uncased", "bert-base-cased"):
        assert name in HUB_CHECKPOINTS
        run = DistillSpec(stage="finetune", student=name, output_dir=str(tmp_path / "r"), data=dict(task="sst2"),
                          weights=dict(relation=0, hard=1))
        assert run.student_init() == "pretrained" and run.student_spec() is None
    assert spec_from_name("bert-base-cased").vocab_size == 28996  # the cased WordPiece vocabulary


# -- the ladder ---------------------------------------------------------------------------------------
def test_the_ladder_is_a_wide_ladder_of_real_hub_teachers():
    spec = SweepSpec.from_file(LADDER, ["seeds=[0]"])
    teachers = spec.teacher_list
    sizes = sorted(spec_from_name(t.ref).layers * spec_from_name(t.ref).hidden ** 2 for t in teachers)
    assert len(set(sizes)) == len(teachers) >= 4 and sizes[-1] / sizes[0] > 30
    assert all(t.ref in HUB_CHECKPOINTS and t.kind == "pretrained" for t in teachers)  # Hub names, loaded
    assert len({t.family for t in teachers}) == 1  # one recipe: one family of curves
    assert len(spec.student_shapes) >= 3 and {m.name for m in spec.variants} == {"minilm", "minimoe"}
    assert spec.stages == ["agnostic", "task"]


def test_the_ladder_dry_runs_offline_with_its_cost(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["sweep", str(LADDER), "--dry-run", "--set", "seeds=[0]", "--set", "tasks=[{task: sst2, max_len: 128}]",
                 "--throughput", "bert-base-uncased:forward=500000"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"78 runs \(6 finetune, 36 agnostic, 36 task\)", out)
    assert "run(s) of unknown size" not in out  # every shape known without a download
    total = re.search(r"GPU-hours: about ([\d.]+) \(finetune ([\d.]+), agnostic ([\d.]+), task ([\d.]+);", out)
    assert total and abs(float(total[1]) - sum(map(float, total.groups()[1:]))) <= 0.02 * float(total[1])
    assert "measured rates (given): 12L-768H forward." in out and "* assumed: H100 SXM" in out


# -- GPU-hours by hand ---------------------------------------------------------------------------------
def small_plan(tmp_path, **over):
    """bert-base fine-tuned on 320 SST-2 sentences (10 steps of 32), then a 2L-192H student by KD (10 steps)."""
    data = dict(name="hours", output_dir=str(tmp_path / "sw"), tasks=[dict(task="sst2", max_len=128,
                                                                             max_train_examples=320)],
                teachers=["bert-base-uncased"], students=dict(shapes=["2L-192H"]), methods=["kd"], stages=["task"],
                budgets=dict(all=dict(batch_size=32, epochs=1)))
    data.update(over)
    spec = SweepSpec(**data)
    return spec, plan(spec)


def test_gpu_hours_from_measured_rates_by_hand(tmp_path):
    spec, nodes = small_plan(tmp_path)
    rates = Throughput.parse(["bert-base-uncased:train=40960", "bert-base-uncased:forward=409600",
                              "2L-192H:train=81920"], default=None)
    rows = {r["kind"]: r for r in estimate(nodes, rates)}
    # A step is 32 x 128 = 4096 tokens: the teacher's fine-tuning 0.1 s a step; the student 0.05 s plus the
    # teacher's forward 0.01 s.
    assert rows["finetune"]["steps"] == rows["task"]["steps"] == 10
    assert rows["finetune"]["gpu_hours"] == pytest.approx(10 * 0.1 / 3600)
    assert rows["task"]["gpu_hours"] == pytest.approx(10 * (0.05 + 0.01) / 3600)
    assert rows["task"]["rate"] == "measured"
    text = format_plan(nodes, spec, rates)
    assert "GPU-hours: about 0.000444 (finetune 0.000278, task 0.000167;" in text and "assumed" not in text


def test_gpu_hours_from_the_assumption_by_hand(tmp_path):
    """Compute-bound (bert-large at batch 512) and launch-bound (2L-192H: the per-layer floor) by hand."""
    spec, nodes = small_plan(tmp_path, teachers=["bert-large-uncased"], students=dict(shapes=["2L-192H"]),
                             tasks=[dict(task="sst2", max_len=128, max_train_examples=5120)],
                             budgets=dict(all=dict(batch_size=512, epochs=1)))
    rows = {r["kind"]: r for r in estimate(nodes, Throughput.parse(["mfu=0.5"], default=None))}
    B, T, L, H, F = 512, 128, 24, 1024, 4096
    macs = B * L * (4 * T * H * H + 2 * T * T * H + 2 * T * H * F) + B * H * H  # qkvo, attention, FFN; pooler
    forward = 2 * macs / (989e12 * 0.5)
    assert forward > 24 * 0.7e-3  # compute-bound: above the floor
    assert rows["finetune"]["gpu_hours"] == pytest.approx(10 * 3 * forward / 3600)
    student = 2 * 3e-3  # 2 layers at the 3 ms floor of a training step (its FLOPs take far less)
    assert rows["task"]["gpu_hours"] == pytest.approx(10 * (student + forward) / 3600)
    assert rows["task"]["rate"] == "assumed" and "2L-192H train" in rows["task"]["assumed_shapes"]


def test_a_measured_table_is_read_and_its_dry_rows_left_out(tmp_path):
    table = tmp_path / "throughput.csv"
    table.write_text("model,shape,phase,batch,seq_len,tokens_per_s,machine,dry_run\n"
                     "2L-192H,2L-192H,train,32,128,81920,Xeon; NVIDIA H100,False\n"
                     "2L-192H,2L-192H,train,32,128,1,CPU,True\n"
                     "2L-192H,2L-192H,train,256,128,300000,Xeon; NVIDIA H100,False\n")
    rates = Throughput.parse([str(table)])
    assert len(rates.rows) == 2 and rates.machines() == ["Xeon; NVIDIA H100"]
    spec = spec_from_name("2L-192H")
    assert rates.step_seconds(spec, "train", 32, 128) == (pytest.approx(0.05), "measured")  # nearest in tokens
    assert rates.step_seconds(spec, "train", 256, 128)[0] == pytest.approx(256 * 128 / 300000)
    assert rates.step_seconds(spec, "forward", 32, 128)[1] == "assumed"


def test_the_default_table_is_read_where_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Throughput.parse([]).rows == []
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "bench" / "throughput.csv").write_text(
        "shape,phase,batch,seq_len,tokens_per_s,machine\n3L-384H,train,32,128,400000,H200\n")
    assert Throughput.parse([]).sources == [str(Path("results/bench/throughput.csv"))]


@pytest.mark.parametrize("values, message", [
    (["3L-384H:backward=5"], r"PHASE train or forward"),
    (["3L-384H=5"], r"PHASE train or forward"),
    (["3L-384H:train=-5"], r"must be positive, got '-5'"),
    (["3L-384H:train=fast"], r"must be positive, got 'fast'"),
    (["not a model:train=5"], r"names no shape gapkit knows offline"),
    (["mfu=2"], r"MFU must lie in \(0, 1\]"),
    (["nowhere.csv"], r"nowhere.csv does not exist: run benchmarks/throughput.py"),
])
def test_bad_throughput_values_get_one_sentence(values, message):
    with pytest.raises(ConfigError, match=message):
        Throughput.parse(values, default=None)


@pytest.mark.parametrize("text, message", [
    ("shape,phase,batch\n3L-384H,train,32\n", r"lacks seq_len, tokens_per_s, machine"),
    ("shape,phase,batch,seq_len,tokens_per_s,machine\n3L-384H,train,32,128,lots,H100\n", r"line 2: .*must be numbers"),
    ("shape,phase,batch,seq_len,tokens_per_s,machine\n3L-384H,eval,32,128,5,H100\n", r"phase must be train or forward"),
    ("", r"lacks any row"),
])
def test_bad_throughput_tables_get_one_sentence(tmp_path, text, message):
    table = tmp_path / "t.csv"
    table.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Throughput.parse([str(table)])


def test_cli_refuses_throughput_without_a_dry_run(capsys):
    assert main(["sweep", str(LADDER), "--throughput", "mfu=0.4"]) == 2
    assert "add --dry-run" in capsys.readouterr().err


def test_the_assumption_says_what_it_assumes():
    text = Assumption().sentence()
    assert "30% of its 989 TFLOP/s peak" in text and "3 ms per layer per train step" in text


# -- the GPU script on a CPU -------------------------------------------------------------------------------
@pytest.mark.slow  # the benchmarks' dry runs and a tiny sweep: about a minute on 2 cores
def test_gpu_script_dry_run_writes_every_part_under_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "gpu-bench.log").read_text()
    for part in ("tests", "moe_overhead", "distill_throughput", "sweep_gpu", "throughput", "evidence"):
        assert re.search(rf"### done {part} in \d+ s \(exit 0\)", log), part
    for table in ("moe_overhead.csv", "distill_throughput.csv", "sweep_gpu.csv", "throughput.csv"):
        assert (out / "bench" / table).stat().st_size > 0, table
    assert (out / "evidence" / "results.csv").stat().st_size > 0
