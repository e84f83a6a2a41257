"""Sweeps: teacher x student x method grids, planned in dependency order, trained in groups that share
one teacher pass, on one process, a local pool or Slurm, into one tidy results table.

Names are imported on first use (:mod:`gapkit.lazy`), except ``plan``, which is also a submodule's name.
"""

from ..lazy import lazy_exports
from .plan import plan  # eager: importing gapkit.sweep.plan later would bind the module to this name

__getattr__, __dir__, _names = lazy_exports(__name__, {
    ".spec": ("SweepSpec",),
    ".plan": ("Node", "format_plan"),
    ".status": ("plan_status",),
    ".execute": ("SweepReport", "run_sweep"),
    ".table": ("build_table", "write_table"),
})
__all__ = ["plan"] + _names
