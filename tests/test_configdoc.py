"""docs/config.md: generated from the config dataclasses, never out of date, every key documented."""

import dataclasses
from pathlib import Path

import pytest

from gapkit.cli import main
from gapkit.configdoc import field_descriptions, render_config_reference
from gapkit.distill import DataSpec, DistillSpec, LossWeights, PipelineSpec, TrainSpec
from gapkit.models import StudentSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_committed_reference_is_the_generated_one():
    assert DOC.read_text(encoding="utf-8") == render_config_reference(), (
        "docs/config.md differs from the config classes: a field or its docstring entry changed. "
        "Regenerate it with `python -m gapkit.configdoc > docs/config.md` and commit it.")


@pytest.mark.parametrize("cls, prefix", [(DistillSpec, ""), (DataSpec, "data."), (TrainSpec, "train."),
                                         (LossWeights, "weights."), (StudentSpec, "student."), (PipelineSpec, "")])
def test_every_field_has_a_row_with_type_default_and_meaning(cls, prefix):
    (section,) = [s for s in render_config_reference().split("\n## ") if f"`{cls.__name__}`." in s]
    descriptions = field_descriptions(cls)
    for f in dataclasses.fields(cls):
        row = next(line for line in section.splitlines() if line.startswith(f"| `{prefix}{f.name}` |"))
        key, kind, default, meaning = [c.strip() for c in row.strip("|").split(" | ")]
        assert kind.startswith("`") and default and meaning == descriptions[f.name] and len(meaning) > 5


def test_types_and_defaults_are_read_from_the_fields():
    text = render_config_reference()
    assert "| `train.lr` | `float` | `3e-05` |" in text
    assert "| `data.text` | `list[str]` | `[]` |" in text
    assert "| `teacher` | `str \\| None` | `null` |" in text
    assert "| `train` | `TrainSpec` | see `train:` |" in text
    assert "| `stages` | `list[dict]` | required |" in text
    assert "| `train.bf16` | `bool` | `true` |" in text


@dataclasses.dataclass
class _Documented:
    """A config.

    Args:
        a, b: shared by two fields
            over two lines.
        c: ``code`` and a | pipe.

    Raises:
        ValueError: not an entry of the Args section.
    """

    a: int = 1
    b: int = 2
    c: str = "x"


def test_docstring_entries_are_parsed():
    assert field_descriptions(_Documented) == {
        "a": "`a`, `b`: shared by two fields over two lines.",
        "b": "`a`, `b`: shared by two fields over two lines.",
        "c": "`code` and a \\| pipe.",
    }


@dataclasses.dataclass
class _Undocumented:
    """Args:
        a: documented.
        z: no such field.
    """

    a: int = 1
    b: int = 2


@dataclasses.dataclass
class _NoDocstring:
    a: int = 1


@pytest.mark.parametrize("cls, words", [
    (_Undocumented, "field(s) b have no entry"),
    (_Undocumented, "entries z name no field"),
    (_NoDocstring, "field(s) a have no entry"),
])
def test_a_field_without_an_entry_is_an_error(cls, words):
    with pytest.raises(ValueError, match="does not document its fields") as err:
        field_descriptions(cls)
    assert words in str(err.value)


@pytest.mark.parametrize("verb", ["distill", "pipeline"])
def test_help_points_to_the_reference(verb, capsys):
    assert main([verb, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "docs/config.md" in out and "python -m gapkit.configdoc" in out
