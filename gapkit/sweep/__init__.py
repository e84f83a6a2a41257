"""Sweeps: teacher x student x method grids, planned in dependency order, trained in groups that share
one teacher pass, on one process, a local pool or Slurm, into one tidy results table."""

from .execute import SweepReport, plan_status, run_sweep
from .plan import Node, format_plan, plan
from .spec import SweepSpec
from .table import build_table, write_table

__all__ = ["SweepSpec", "Node", "plan", "format_plan", "plan_status", "run_sweep", "SweepReport", "build_table",
           "write_table"]
