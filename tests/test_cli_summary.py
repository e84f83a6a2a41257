"""The run summary table and the next-steps hint printed after ``gapkit pipeline``."""

import pytest
import yaml

from gapkit.cli import format_summary_table, main, next_steps


def row(**over):
    base = dict(stage="task", name="minimoe_task", model="2L-64H-4A-1,4E", params_total=2_345_678,
                params_active=1_234_567, gflops=0.00423, convention="macs", metric="dev/accuracy", value=87.5,
                run_dir="runs/synthetic/minimoe_task")
    return {**base, **over}


def test_columns_align_and_numbers_read_like_the_flops_table():
    rows = [row(stage="finetune", name="teacher", model="4L-128H-4A", params_total=4_500_000,
                params_active=4_500_000, gflops=1.5, value=91.234, run_dir="runs/synthetic/teacher"), row()]
    lines = format_summary_table(rows).splitlines()
    header, rule, first, second = lines[:4]
    assert header.split("  ")[0] == "stage" and "GFLOPs (macs)" in header and header.rstrip().endswith("run folder")
    assert set(rule) == {"-", " "}
    # every column starts at the same offset on every line
    starts = [i for i, c in enumerate(rule) if c == "-" and (i == 0 or rule[i - 1] == " ")]
    for line in (header, first, second):
        assert all(line[s - 2:s] in ("  ", "") for s in starts[1:])
    assert first.split() == ["finetune", "teacher", "4L-128H-4A", "4.5", "4.5", "1.50", "dev/accuracy", "91.23",
                             "runs/synthetic/teacher"]
    assert second.split()[3:6] == ["2.3", "1.2", "0.00423"]  # tiny values keep 3 significant digits
    # numbers right-aligned: the params column ends where its header ends
    assert first.index("4.5") + 3 == header.index("params total (M)") + len("params total (M)")
    assert lines[-1] == "macs: multiply-accumulates of every matmul, attention scores included (fvcore's unit)."


def test_missing_numbers_show_as_a_dash_and_mixed_conventions_name_theirs():
    text = format_summary_table([row(gflops=None, value=None, metric=None), row(convention="paper", gflops=0.5)])
    header, _, first, second = text.splitlines()[:4]
    assert "GFLOPs (macs)" not in header and "GFLOPs" in header
    assert first.split()[5:8] == ["-", "-", "-"]
    assert "0.50 (paper)" in second
    assert "macs: " in text and "paper: " in text


@pytest.mark.parametrize("convention, other", [("macs", "paper"), ("paper", "macs")])
def test_next_steps_name_the_runs_models_and_the_reference(tmp_path, convention, other):
    moe, dense = tmp_path / "minimoe_task", tmp_path / "dense"
    for run_dir in (moe, dense):
        (run_dir / "best").mkdir(parents=True)
        (run_dir / "best" / "config.json").write_text("{}")
    (moe / "routing.parquet").write_bytes(b"")
    text = next_steps([row(convention=convention, model="2L-64H-4A", run_dir=str(dense)),
                       row(convention=convention, run_dir=str(moe)), row(convention=convention, run_dir=str(tmp_path / "never_saved"))])
    assert text.splitlines()[0] == "Next steps:"
    # the saved models (their config has the real vocabulary), not the shape names
    assert f"gapkit flops {dense}/best {moe}/best --convention {other}" in text
    assert "gapkit distill configs/" in text and "docs/config.md" in text
    assert f"{moe}/routing.parquet" in text


def test_next_steps_without_routing_records_leave_the_routing_line_out():
    assert "routing.parquet" not in next_steps([row(run_dir="/nonexistent/run")])


def test_pipeline_ends_with_the_summary_table_and_next_steps(tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(dict(
        output_dir=str(tmp_path / "p"),
        defaults=dict(data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=32),
                      train=dict(lr=1e-3, max_steps=2, batch_size=16, device="cpu"), relation_heads=4),
        stages=[dict(name="teacher", stage="finetune", student="2L-32H-4A", weights=dict(relation=0, hard=1)),
                dict(name="student", stage="task", teacher="@teacher", student="1L-32H-4A-1,2E",
                     weights=dict(relation=0, soft=1))])))
    assert main(["pipeline", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("\nstage ") + 1:].splitlines()
    assert "GFLOPs (" in lines[0] and lines[0].rstrip().endswith("run folder")
    assert [line.split()[:3] for line in lines[2:4]] == [["finetune", "teacher", "2L-32H-4A"],
                                                         ["task", "student", "1L-32H-4A-1,2E"]]
    assert lines[2].split()[-1] == str(tmp_path / "p" / "teacher")
    steps = out[out.index("Next steps:"):]
    assert f"gapkit flops {tmp_path}/p/teacher/best {tmp_path}/p/student/best" in steps and "docs/config.md" in steps
    assert str(tmp_path / "p" / "student" / "routing.parquet") in steps
