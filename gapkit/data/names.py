"""Which tasks gapkit knows by name, and the check of a task name (no torch: configs are read without it)."""

from __future__ import annotations

from ..errors import DataError
from .glue import GLUE_TASKS

__all__ = ["OTHER_TASKS", "BUILT_IN_TASKS", "check_task_name"]

OTHER_TASKS = ("conll", "synthetic", "text")
BUILT_IN_TASKS = (*GLUE_TASKS, *OTHER_TASKS)


def _normal(task: str) -> str:
    name = task.lower().replace("-", "")
    return "conll" if name == "conll2003" else name


def check_task_name(task: str, custom: dict | None = None) -> str:
    """Normalise a task name (``SST-2`` -> ``sst2``); DataError naming the known tasks if unknown.

    With ``custom`` (the settings of a data set of the user's own, ``data.custom``) the name is the
    user's: kept as written, and refused when it is one of gapkit's tasks (it would be scored as that task).
    """
    name = _normal(task)
    if custom:
        if name in BUILT_IN_TASKS:
            raise DataError(f"Task name {task!r} is one of gapkit's tasks; a data set of your own (data.custom) needs a "
                            f"name of its own in data.task (e.g. {name}_own).")
        if not task.strip() or task != task.strip():
            raise DataError(f"Task name {task!r} of the data set in data.custom must be a plain name (e.g. reviews).")
        return task
    if name not in BUILT_IN_TASKS:
        raise DataError(f"Unknown task {task!r}: use a GLUE task ({', '.join(GLUE_TASKS)}), conll, synthetic or text, "
                        f"or describe a data set of your own in data.custom.")
    return name
