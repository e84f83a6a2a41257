"""Tests of ``gapkit flops``: the table, --json, bad input, and ``python -m gapkit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from transformers import BertConfig

from gapkit.cli import DEFAULT_FLOPS_MODELS, main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_names_its_convention(capsys):
    code, out, err = run_cli(capsys, "flops", "2L-192H", "3L-384H-1,4E", "--seq-len", "16")
    assert code == 0, err
    title, blank, header, rule, *rest = out.splitlines()
    assert title.startswith("FLOPs") and "convention macs" in title and "sequence length 16" in title
    assert blank == "" and set(rule) == {"-", " "}
    for column in ("model", "layers", "hidden", "experts", "params total (M)", "params active (M)", "GFLOPs (macs)"):
        assert column in header
    rows = [line.split() for line in rest[:2]]
    assert [r[0] for r in rows] == ["2L-192H", "3L-384H-1,4E"]
    assert rows[1][3] == "1,4E" and float(rows[1][4]) > float(rows[1][5])
    assert rest[2] == "" and rest[3].startswith("macs: multiply-accumulates")


def test_default_models_paper_convention(capsys):
    code, out, _ = run_cli(capsys, "flops", "--convention", "paper")
    assert code == 0
    lines = out.splitlines()
    assert "convention paper" in lines[0] and "GFLOPs (paper)" in lines[2]
    table = {line.split()[0]: line.split()[-1] for line in lines[4:4 + len(DEFAULT_FLOPS_MODELS)]}
    assert list(table) == list(DEFAULT_FLOPS_MODELS)
    assert (table["3L-384H"], table["bert-base"], table["bert-large"]) == ("0.68", "10.87", "38.65")
    assert table["3L-384H-1,4E"] == table["3L-384H"]


def test_json_rows(capsys):
    code, out, _ = run_cli(capsys, "flops", "3L-384H", "2L-192H", "--convention", "flops", "--seq-len", "8", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["model"] for r in rows] == ["3L-384H", "2L-192H"]
    assert all(r["convention"] == "flops" and r["seq_len"] == 8 for r in rows)
    assert rows[0]["layers"] == 3 and rows[0]["experts"] == "dense" and rows[0]["gflops"] > rows[1]["gflops"] > 0


@pytest.mark.parametrize("argv, expected", [
    (["flops", "3L-384H", "not a model!"], "'not a model!'"),
    (["flops", "3L-100H"], "head count"),
    (["flops", "3L-384H", "--seq-len", "600"], "exceeds"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, expected):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""  # nothing counted or printed before the error
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("gapkit: error: ") and expected in err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["flops", "--convention", "gflops"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_local_folder(capsys, tmp_path):
    BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=64).save_pretrained(tmp_path)
    code, out, err = run_cli(capsys, "flops", str(tmp_path), "--seq-len", "16", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["model"], row["layers"], row["hidden"], row["heads"]) == (str(tmp_path), 2, 32, 4)


def test_python_dash_m(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "gapkit", "flops", "3L-384H", "--convention", "paper", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["model"] == "3L-384H" and row["gflops"] == pytest.approx(0.68, abs=0.005)
    bad = subprocess.run([sys.executable, "-m", "gapkit", "flops", "no-such-model-here"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "no-such-model-here" in bad.stderr and "Hub" in bad.stderr
