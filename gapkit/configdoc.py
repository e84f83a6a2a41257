"""The reference of every config key, generated from the config dataclasses themselves.

Each key's name, type and default come from the dataclass fields; its meaning comes from the class
docstring's ``Args:`` (or ``Attributes:``) section, one entry per field (``name: text`` or, for fields
that share a meaning, ``a, b: text``). A field without an entry, or an entry naming no field, is an
error, so the reference cannot fall behind the code. ``docs/config.md`` is this module's output:

    python -m gapkit.configdoc > docs/config.md

(a test checks that the committed file equals the generated text; regenerate it whenever a field changes).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from typing import NamedTuple

__all__ = ["render_config_reference", "field_descriptions"]

ENTRY_HEADINGS = ("Args:", "Attributes:")


class Section(NamedTuple):
    key: str  # where the keys sit in a config file: "" (top level), "data", "train" ...
    title: str
    cls: type
    intro: str


def _sections() -> list[Section]:
    from .distill.config import DataSpec, DistillSpec, TrainSpec
    from .distill.losses import LossWeights
    from .distill.pipeline import PipelineSpec
    from .models.spec import StudentSpec
    from .sweep.spec import SweepSpec

    return [
        Section("", "Run config (`gapkit distill`)", DistillSpec,
                "A YAML or JSON mapping; `--set key=value` (e.g. `--set train.lr=1e-4`) overrides one key."),
        Section("data", "`data:` what to train on", DataSpec, "A mapping under `data:` in a run config."),
        Section("train", "`train:` optimisation and bookkeeping", TrainSpec,
                "A mapping under `train:` in a run config."),
        Section("weights", "`weights:` the distillation objective", LossWeights,
                "A mapping under `weights:` in a run config."),
        Section("student", "`student:` a student's shape", StudentSpec,
                "`student:` is a preset or shape name (`3L-384H`, `2L-192H-1,4E`), a model folder or Hub name, "
                "or a mapping of these keys."),
        Section("", "Pipeline file (`gapkit pipeline`)", PipelineSpec,
                "A YAML mapping; each stage is a run config plus a `name`, merged over `defaults`; "
                "`--set key=value` overrides a key of `defaults`."),
        Section("", "Sweep file (`gapkit sweep`)", SweepSpec,
                "A YAML mapping (see configs/sweeps/ and docs/sweeps.md); `--set key=value` overrides a key "
                "(values are YAML: `--set seeds=[0,1]`)."),
    ]


def field_descriptions(cls: type) -> dict[str, str]:
    """The description of each field of dataclass ``cls``, read from its docstring's Args section.

    Raises:
        ValueError: a field without an entry, or an entry naming no field of ``cls``.
    """
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in ENTRY_HEADINGS]
    entries: dict[str, list[str]] = {}
    if starts:
        heading = len(lines[starts[0]]) - len(lines[starts[0]].lstrip())
        current: list[str] | None = None
        indent = None  # of the entries; deeper lines continue an entry
        for line in lines[starts[0] + 1:]:
            if not line.strip():
                current = None
                continue
            depth = len(line) - len(line.lstrip())
            if depth <= heading:
                break  # the section ends at the next line as shallow as its heading
            indent = depth if indent is None else indent
            match = re.match(r"([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*):(?:\s+|$)(.*)", line.strip())
            if depth == indent and match:
                names = re.split(r"\s*,\s*", match.group(1))
                # names sharing an entry share its text, which names them all
                current = [match.group(2)] if len(names) == 1 else [
                    ", ".join(f"``{n}``" for n in names) + ": " + match.group(2)]
                for name in names:
                    entries[name] = current
            elif current is not None and depth > indent:
                current.append(line.strip())
    fields = [f.name for f in dataclasses.fields(cls)]
    missing = [f for f in fields if f not in entries]
    extra = [e for e in entries if e not in fields]
    problems = []
    if missing:
        problems.append(f"field(s) {', '.join(missing)} have no entry")
    if extra:
        problems.append(f"entries {', '.join(extra)} name no field")
    if problems:
        raise ValueError(f"The docstring of {cls.__name__} does not document its fields: {'; '.join(problems)} "
                         f"(write one 'name: meaning' line per field under 'Args:').")
    return {f: _markdown(" ".join(entries[f])) for f in fields}


def _markdown(text: str) -> str:
    """Docstring text as one markdown table cell: ``code`` -> `code`, pipes escaped."""
    return text.replace("``", "`").replace("|", "\\|").strip()


def _type(field: dataclasses.Field) -> str:
    kind = field.type if isinstance(field.type, str) else inspect.formatannotation(field.type)
    return f"`{kind}`".replace("|", "\\|")


def _default(field: dataclasses.Field, sections: dict[type, str]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        key = sections.get(type(value))
        return f"see `{key}:`" if key else f"`{type(value).__name__}()`"
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, str)):
        text = str(value)
    else:
        text = json.dumps(value)
    return f"`{text}`".replace("|", "\\|")


def render_config_reference() -> str:
    """The markdown reference of every config key (the text of ``docs/config.md``)."""
    sections = _sections()
    nested = {s.cls: s.key for s in sections if s.key}
    out = [
        "# Config keys",
        "",
        "Every key of gapkit's run configs (`gapkit distill`) and pipeline files (`gapkit pipeline`), with its",
        "type, default and meaning. Generated from the config classes by `python -m gapkit.configdoc`; do not",
        "edit by hand. The shipped examples are under `configs/`.",
    ]
    for section in sections:
        prefix = f"{section.key}." if section.key else ""
        out += ["", f"## {section.title}", "", f"`{section.cls.__name__}`. {section.intro}", "",
                "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        descriptions = field_descriptions(section.cls)
        for field in dataclasses.fields(section.cls):
            out.append(f"| `{prefix}{field.name}` | {_type(field)} | {_default(field, nested)} | "
                       f"{descriptions[field.name]} |")
    return "\n".join(out) + "\n"


def main() -> int:
    try:
        text = render_config_reference()
    except ValueError as err:
        print(f"gapkit.configdoc: error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
