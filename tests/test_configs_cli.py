"""Every shipped config builds; the distill/pipeline verbs of the command line."""

import json
from pathlib import Path

import pytest
import yaml

from gapkit.cli import main
from gapkit.distill import DistillSpec, PipelineSpec, ta_chain

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    data = yaml.safe_load(path.read_text())
    spec = PipelineSpec.from_file(path) if "stages" in data else DistillSpec.from_file(path)
    if isinstance(spec, PipelineSpec):
        assert len(spec.resolved()) == len(data["stages"])
    else:
        assert spec.stage in ("finetune", "agnostic", "task")


def test_shipped_configs_exist():
    assert len(CONFIGS) >= 3


def test_shipped_ta_chain_has_the_stages_of_ta_chain(tmp_path):
    """configs/synthetic_ta_chain.yaml: a teacher fine-tune, then exactly the four stages ta_chain builds."""
    path = CONFIGS[0].parent / "synthetic_ta_chain.yaml"
    spec = PipelineSpec.from_file(path)
    teacher, *chain = spec.stages
    assert teacher["stage"] == "finetune" and teacher["name"] == "teacher"
    # ta_chain with stand-in names; in the file the pre-trained and the task teacher are both @teacher
    built = ta_chain(teacher="T", assistant=chain[0]["student"], student=chain[2]["student"], task_teacher="TT",
                     output_dir=str(tmp_path / "ta"))
    roles = [(s["name"], s["stage"], {"T": "@teacher", "TT": "@teacher"}.get(s["teacher"], s["teacher"]),
              s["student"]) for s in built.stages]
    assert [(s["name"], s["stage"], s["teacher"], s["student"]) for s in chain] == roles
    # CPU-sized: small models on the synthetic task
    sizes = [spec.resolved()[0].student_spec(), *(s.student_spec() for s in spec.resolved() if s.stage == "agnostic")]
    assert [s.hidden for s in sizes] == sorted((s.hidden for s in sizes), reverse=True) and sizes[0].hidden <= 128
    assert spec.defaults["data"]["task"] == "synthetic"


def test_config_round_trip_and_overrides(tmp_path):
    spec = DistillSpec.from_file(CONFIGS[0].with_name("synthetic_teacher.yaml"), ["train.lr=0.5", "output_dir=elsewhere"])
    assert spec.train.lr == 0.5 and spec.output_dir == "elsewhere"
    path = tmp_path / "c.yaml"
    path.write_text(spec.to_yaml())
    assert DistillSpec.from_file(path).to_dict() == spec.to_dict()


def test_cli_distill_runs_and_reports(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(dict(
        stage="finetune", student="2L-32H-4A", output_dir=str(tmp_path / "run"),
        data=dict(task="synthetic", max_len=32, max_train_examples=128, max_eval_examples=32),
        train=dict(lr=1e-3, max_steps=3, batch_size=16, device="cpu"), weights=dict(relation=0, hard=1))))
    assert main(["distill", str(config), "--quiet"]) == 0
    assert "completed: 3 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 3
    # the finished run is never overwritten
    assert main(["distill", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gapkit: error:") and "already holds a finished run" in err and "\n" not in err


@pytest.mark.parametrize("args, words", [
    (["distill", "missing.yaml"], "does not exist"),
    (["distill", "{cfg}", "--set", "train.lr=-1"], "TrainSpec.lr"),
    (["distill", "{cfg}", "--set", "colour=red"], "Unknown run setting"),
    (["distill", "{cfg}", "--set", "data.task=sst3"], "Unknown task"),
    (["pipeline", "{cfg}"], "not a pipeline"),
])
def test_cli_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys, args, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(stage="finetune", student="2L-32H-4A", output_dir=str(tmp_path / "r"),
                                       weights=dict(relation=0, hard=1))))
    assert main([a.format(cfg=cfg) for a in args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_shipped_configs_never_hide_random_weights_behind_a_model_name():
    """bert-base-uncased as a run's student means the pretrained weights (a preset shape only in gapkit flops)."""
    teacher = DistillSpec.from_file(CONFIGS[0].with_name("glue_sst2_teacher.yaml"))
    assert teacher.student_init() == "pretrained" and teacher.student_spec() is None
    assert DistillSpec.from_file(CONFIGS[0].with_name("synthetic_teacher.yaml")).student_init() == "random"


def test_readme_override_example_sets_a_float(tmp_path):
    spec = DistillSpec.from_file(CONFIGS[0].with_name("synthetic_teacher.yaml"), ["train.lr=1e-3"])
    assert spec.train.lr == 1e-3 and isinstance(spec.train.lr, float)
