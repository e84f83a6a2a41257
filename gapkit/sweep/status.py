"""Where each planned run of a sweep stands, read from its folder, and the sweep's failure records.

A run's own state comes from its run folder (:class:`gapkit.distill.runfiles.RunDir`, the one reader of
that layout), compared with the config the plan resolves for it now: a folder holding a run of another
config is ``stale``, never ``done``. A unit that ended without its run writing a result (a crashed worker,
a config that cannot be built) leaves a failure record, ``<sweep>/failures/<node>.json``, which the next
start of the sweep clears and tries again.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..distill.runfiles import RunDir, RunStatus
from ..errors import GapkitError
from ..io import atomic_write, json_dumps
from .plan import Node

__all__ = ["node_status", "plan_status", "FailureRecords", "STATES"]

STATES = ("done", "running", "interrupted", "stale", "failed", "pending")


class FailureRecords:
    """The failure records of a sweep (``<output_dir>/failures/<node>.json``: run_dir, status, reason)."""

    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir) / "failures"

    def path(self, node_id: str) -> Path:
        return self.dir / f"{node_id}.json"

    def reason(self, node_id: str) -> RunStatus | None:
        """``failed`` with the recorded reason (or a sentence saying the record is unreadable), or None."""
        path = self.path(node_id)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return RunStatus("failed", f"The sweep's failure record {path} is not readable JSON: the run failed "
                                       f"for a reason now lost; rerunning the sweep tries it again.")
        return RunStatus("failed", record.get("reason"))

    def write(self, node_id: str, outcome: dict) -> None:
        self.dir.mkdir(exist_ok=True)
        atomic_write(self.path(node_id), json_dumps(outcome, indent=2))

    def clear(self, node_id: str) -> bool:
        """Remove a node's record (it is tried again); True when there was one."""
        path = self.path(node_id)
        if not path.is_file():
            return False
        path.unlink()
        return True


def _resolved(node: Node) -> dict | None:
    """The config the run of ``node`` has when built now (gapkit's defaults of today), or None when it cannot
    be built (the executor then records why)."""
    try:
        return node.spec().to_dict()
    except (GapkitError, TypeError, ValueError):
        return None


def node_status(node: Node, output_dir: str | Path) -> RunStatus:
    """``done``, ``failed``, ``stale`` (its folder holds a run of another config than the plan's, resolved now),
    ``running`` (a live process holds it), ``interrupted`` (started, not ended, no process on it: the next
    run of the sweep resumes it) or ``pending``, with a sentence for ``failed`` and ``stale``."""
    run = RunDir(node.folder(output_dir))
    if node.kind == "prepare":  # a truncated teacher: best/ as a Hugging Face folder, no run record
        status = RunStatus("done") if run.has_best() else run.status()
    else:
        status = run.status(_resolved(node))
    if status.state in ("interrupted", "pending"):
        return FailureRecords(output_dir).reason(node.id) or status
    return status


def plan_status(nodes: list[Node], output_dir: str | Path):
    """Where each planned run stands in ``output_dir`` (:func:`node_status`), as a table.

    Args:
        nodes: a plan (:func:`gapkit.sweep.plan`).
        output_dir: the sweep folder to look in (it need not exist: every run is then ``pending``).
    Returns:
        A DataFrame, one row per node in plan order: ``id``, ``kind``, ``teacher``, ``student``,
        ``method``, ``seed``, ``status`` (done, running, interrupted, stale, failed, pending) and ``reason``.
    """
    import pandas as pd

    rows = [dict(id=n.id, kind=n.kind, teacher=n.meta.get("teacher"), student=n.meta.get("student"),
                 method=n.meta.get("method"), seed=n.meta.get("seed"), **node_status(n, output_dir)._asdict())
            for n in nodes]
    frame = pd.DataFrame(rows, columns=["id", "kind", "teacher", "student", "method", "seed", "state", "reason"])
    return frame.rename(columns={"state": "status"})
