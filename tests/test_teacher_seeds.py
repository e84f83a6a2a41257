"""Several teacher fine-tuning seeds in a sweep: every teacher (and assistant) fine-tuned once per
teacher seed, every student seed distilled from every replicate; slugs, the dry run and the table."""

import pytest

from gapkit.errors import ConfigError
from gapkit.sweep import SweepSpec, build_table, format_plan, plan, run_sweep


def sweep(out, **over) -> dict:
    base = dict(
        name="tseeds", output_dir=str(out),
        tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=32, holdout=16)],
        teachers=[dict(family="scratch", shapes=["1L-32H-4A", "2L-32H-4A"])],
        students=dict(shapes=["1L-16H-4A"]), methods=["kd"], stages=["task"], relation_heads=4, seeds=[0, 1],
        budgets=dict(all=dict(lr=3e-3, max_steps=2, batch_size=16, eval_every=2, device="cpu")),
    )
    base.update(over)
    return base


@pytest.mark.parametrize("value, message", [
    ([], r"sweep\.teacher_seed must be an integer >= 0, a non-empty list of integers >= 0 or .paired., got \[\]"),
    ([0, 1, 0], r"sweep\.teacher_seed lists seed 0 twice: list each teacher seed once"),
    ([0, -2], r"sweep\.teacher_seed must be an integer >= 0, a non-empty list"),
    (True, r"sweep\.teacher_seed must be an integer >= 0.*got True"),
])
def test_bad_teacher_seeds_get_one_sentence(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**sweep(tmp_path, teacher_seed=value))


def test_an_int_plans_exactly_what_a_one_item_list_would_not_rename(tmp_path):
    one = plan(SweepSpec(**sweep(tmp_path, teacher_seed=5)))
    assert not any("-t5" in n.id for n in one)
    assert {n.meta["teacher_seed"] for n in one} == {5}
    assert len(one) == 2 + 2 * 2  # two teachers fine-tuned, two students seeds from each


def test_several_teacher_seeds_cross_every_student_seed(tmp_path):
    nodes = plan(SweepSpec(**sweep(tmp_path, teacher_seed=[0, 7])))
    teachers = [n for n in nodes if n.kind == "finetune"]
    students = [n for n in nodes if n.kind == "task"]
    assert len(teachers) == 2 * 2 and len(students) == 2 * 2 * 2
    assert len({n.id for n in nodes}) == len(nodes)
    assert {(n.meta["teacher"], n.meta["teacher_seed"]) for n in teachers} == {
        (t, s) for t in ("1L-32H-4A", "2L-32H-4A") for s in (0, 7)}
    assert all(n.id.startswith(f"teacher-{n.meta['teacher']}-synthetic-t{n.meta['seed']}-") for n in teachers)
    assert all(n.config["train"]["seed"] == n.meta["teacher_seed"] for n in teachers)
    by_id = {n.id: n for n in nodes}
    for s in students:  # each student learns from the replicate its teacher_seed names
        (dep,) = s.deps
        assert by_id[dep].meta["teacher_seed"] == s.meta["teacher_seed"] and f"-t{s.meta['teacher_seed']}-" in s.id
    assert {(s.meta["seed"], s.meta["teacher_seed"]) for s in students} == {(a, b) for a in (0, 1) for b in (0, 7)}


def test_assistants_are_replicated_and_agnostic_students_of_a_pretrained_teacher_shared(tmp_path):
    spec = SweepSpec(**sweep(tmp_path, teachers=["org/bert"], methods=["minilm", dict(name="minilm_ta",
                                                                                     assistant="2L-16H-4A")],
                             teacher_seed=[0, 1], seeds=[0], stages=["agnostic", "task"]))
    nodes = plan(spec)
    assistants = [n for n in nodes if n.meta.get("role") == "assistant"]
    assert len(assistants) == 2 * 2 and {n.meta["teacher_seed"] for n in assistants} == {0, 1}
    agn_minilm = [n for n in nodes if n.kind == "agnostic" and n.meta["method"] == "minilm"]
    assert len(agn_minilm) == 1 and agn_minilm[0].meta["teacher_seed"] is None  # learned from no fine-tune
    assert "-t" not in agn_minilm[0].id.split("-s0")[1]
    agn_ta = [n for n in nodes if n.kind == "agnostic" and n.meta["method"] == "minilm_ta" and n.meta["role"] == "student"]
    assert len(agn_ta) == 2 and {n.meta["teacher_seed"] for n in agn_ta} == {0, 1}


def test_the_dry_run_shows_the_teacher_seed(tmp_path):
    spec = SweepSpec(**sweep(tmp_path, teacher_seed=[3, 4]))
    text = format_plan(plan(spec), spec)
    header = text.splitlines()[0].split("  ")
    assert "teacher seed" in [h.strip() for h in header if h.strip()]
    lines = [line.split() for line in text.splitlines()[2:] if line[:1].isdigit()]
    assert {line[6] for line in lines} == {"0", "1", "3", "4"}  # student seeds and teacher seeds of teachers
    assert {line[7] for line in lines} == {"3", "4"}


def test_the_table_has_each_rows_teacher_seed(tmp_path):
    spec = SweepSpec(**sweep(tmp_path, teachers=[dict(family="scratch", shapes=["1L-32H-4A"])], seeds=[0],
                             teacher_seed=[0, 1]))
    assert run_sweep(spec, progress=False, log=lambda *a: None).ok
    table = build_table(spec.output_dir)
    assert str(table.teacher_seed.dtype) == "Int64"
    best = table[(table.model == "best") & (table.split == "dev") & (table.metric == "score")]
    assert sorted(best[best.role == "teacher"].teacher_seed) == [0, 1]
    students = best[best.role == "student"]
    assert sorted(students.teacher_seed) == [0, 1] and set(students.seed) == {0}
    # Each student's teacher_params are its own replicate's (the same shape: equal), and runs differ.
    assert students.run.nunique() == 2 and students.teacher_params.notna().all()
