"""What a planned run costs in GPU-hours: measured throughput where there is some, else a stated assumption.

A run spends its time in two computations over the same tokens: a training step of the model it trains
(forward, backward, optimizer) and, when it learns from a teacher, the teacher's forward::

    seconds = steps * (step_seconds(trained model, "train") + step_seconds(teacher, "forward"))

per optimizer step of ``batch_size`` sequences of ``max_len`` tokens (padding counted: an upper bound where
batches are padded to their longest sentence; evaluation, data loading and compiling are not counted, and
a teacher pass shared by a group of students is counted once per student). GPU-hours are GPU-seconds
over 3600, however many GPUs share them.

``step_seconds(model, phase)`` comes, in order, from

- **a measured rate**: a row of a throughput table (``benchmarks/throughput.py`` on a GPU writes
  ``results/bench/throughput.csv``: tokens/s of a model's bf16 training step or forward at a batch and
  length) whose ``shape`` is the model's (``StudentSpec.shape_name``, e.g. ``12L-768H``, ``3L-384H-1,4E``)
  and ``phase`` the one asked, the row nearest in tokens per step; the step then takes
  ``batch * max_len / tokens_per_s``. A rate given by hand (``MODEL:PHASE=TOKENS_PER_S``) is one such row;
- **the assumption** (:class:`Assumption`), for a model no row measures: the step's FLOPs (flops
  convention, 2 x MACs, attention included; x3 for a training step) at ``mfu`` of a bf16 peak, but never
  less than a per-layer floor: a small model on a GPU is bound by kernel launches and host syncs, not
  arithmetic (gapkit's own eager bf16 rows on an H200, ``results/bench/moe_overhead.csv``: 3L-384H and
  4L-384H at batch 32, length 128 take about 3 ms per layer for a training step and 0.7 ms per layer for a
  forward, some 20 times what their FLOPs at 30% of peak would take).

Every estimate says which models were measured and which assumed, and on what device.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..models.spec import StudentSpec

__all__ = ["Assumption", "Throughput", "DEFAULT_TABLE", "PHASES"]

PHASES = ("train", "forward")
# Where benchmarks/throughput.py records its rows (relative to the repository root, where gapkit is run).
DEFAULT_TABLE = Path("results") / "bench" / "throughput.csv"
_COLUMNS = ("shape", "phase", "batch", "seq_len", "tokens_per_s", "machine")


@dataclass(frozen=True)
class Assumption:
    """The rate assumed for a model no measured row covers (module docstring).

    Attributes:
        device: what the numbers describe, printed with every estimate that uses them.
        peak_tflops: the device's dense bf16 peak (NVIDIA's H100 SXM datasheet: 989 TFLOP/s without sparsity).
        mfu: the fraction of the peak a compute-bound step reaches (an assumption: BERT-sized encoders in eager
            PyTorch with bf16 autocast).
        floor_ms_per_layer: the least time a step takes per transformer layer, per phase (launch-bound small
            models; gapkit's eager bf16 H200 rows, see the module docstring).
    """

    device: str = "H100 SXM, bf16"
    peak_tflops: float = 989.0
    mfu: float = 0.3
    floor_ms_per_layer: tuple = (("train", 3.0), ("forward", 0.7))

    def __post_init__(self):
        if not 0 < self.mfu <= 1:
            raise ConfigError(f"The assumed MFU must lie in (0, 1], got {self.mfu!r}: e.g. --throughput mfu=0.3.")

    def step_seconds(self, spec: StudentSpec, phase: str, batch: int, seq_len: int) -> float:
        from ..flops import analytic_count

        flops = analytic_count(spec, seq_len=seq_len, batch=batch, convention="flops") * (3 if phase == "train" else 1)
        floor = spec.layers * dict(self.floor_ms_per_layer)[phase] / 1e3
        return max(flops / (self.peak_tflops * 1e12 * self.mfu), floor)

    def sentence(self) -> str:
        floors = ", ".join(f"{ms:g} ms per layer per {p} step" for p, ms in self.floor_ms_per_layer)
        return (f"assumed: {self.device} at {self.mfu:.0%} of its {self.peak_tflops:g} TFLOP/s peak, at least "
                f"{floors} (launch-bound small models)")


@dataclass
class Throughput:
    """Measured rates (rows of a throughput table, or given by hand) and the assumption for the rest.

    Attributes:
        rows: dicts with ``shape``, ``phase``, ``batch``, ``seq_len``, ``tokens_per_s``, ``machine``.
        sources: where the rows came from (files, ``given``), for the printed sentence.
        assumption: the :class:`Assumption` for shapes no row measures.
    """

    rows: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    assumption: Assumption = field(default_factory=Assumption)

    @classmethod
    def parse(cls, values: list[str] | None, default: str | Path | None = DEFAULT_TABLE) -> "Throughput":
        """From the command line's ``--throughput`` values, each a throughput CSV file,
        ``MODEL:PHASE=TOKENS_PER_S`` (a preset, Hub checkpoint gapkit knows or shape; phase train or forward)
        or ``mfu=F`` (the assumption's MFU). With no file named, ``default`` is read when it exists."""
        out, mfu = cls(), None
        files = [v for v in values or [] if "=" not in v]
        if not files and default is not None and Path(default).is_file():
            files = [str(default)]
        for path in files:
            out.add_csv(path)
        for value in values or []:
            if "=" not in value:
                continue
            key, _, number = value.partition("=")
            rate = _positive(number, value)
            if key.strip().lower() == "mfu":
                mfu = rate
                continue
            model, sep, phase = key.rpartition(":")
            if not sep or phase not in PHASES:
                raise ConfigError(f"--throughput {value!r}: write MODEL:PHASE=TOKENS_PER_S with PHASE train or "
                                  f"forward (e.g. 3L-384H:train=400000), mfu=F, or a throughput CSV file.")
            out.rows.append(dict(shape=_shape_of(model, value).shape_name, phase=phase, batch=None, seq_len=None,
                                 tokens_per_s=rate, machine="given"))
            if "given" not in out.sources:
                out.sources.append("given")
        if mfu is not None:
            out.assumption = Assumption(mfu=mfu)
        return out

    def add_csv(self, path: str | Path) -> None:
        """The measured rows of a throughput CSV (``benchmarks/throughput.py``); dry-run rows are left out."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Throughput table {path} does not exist: run benchmarks/throughput.py on a GPU (or "
                              f"benchmarks/gpu.sh), or leave --throughput out to use the stated assumption.")
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise ConfigError(f"Throughput table {path} cannot be read ({type(err).__name__}).") from None
        missing = [c for c in _COLUMNS if rows and c not in rows[0]] or ([] if rows else ["any row"])
        if missing:
            raise ConfigError(f"Throughput table {path} lacks {', '.join(missing)}: it must hold the columns "
                              f"{', '.join(_COLUMNS)}, as benchmarks/throughput.py writes them.")
        for i, row in enumerate(rows, 2):
            if str(row.get("dry_run", "")).lower() == "true":
                continue
            try:
                parsed = dict(shape=row["shape"], phase=row["phase"], batch=int(row["batch"]),
                              seq_len=int(row["seq_len"]), tokens_per_s=float(row["tokens_per_s"]),
                              machine=row["machine"])
            except (TypeError, ValueError):
                raise ConfigError(f"Throughput table {path}, line {i}: batch, seq_len and tokens_per_s must be "
                                  f"numbers, got {row.get('batch')!r}, {row.get('seq_len')!r}, "
                                  f"{row.get('tokens_per_s')!r}.") from None
            if parsed["phase"] not in PHASES or not parsed["tokens_per_s"] > 0:
                raise ConfigError(f"Throughput table {path}, line {i}: phase must be train or forward and "
                                  f"tokens_per_s > 0, got {parsed['phase']!r} and {parsed['tokens_per_s']!r}.")
            self.rows.append(parsed)
        self.sources.append(str(path))

    def measured(self, spec: StudentSpec, phase: str, batch: int, seq_len: int) -> dict | None:
        """The row measuring ``spec`` in ``phase`` nearest in tokens per step (a rate given by hand first)."""
        rows = [r for r in self.rows if r["shape"] == spec.shape_name and r["phase"] == phase]
        if not rows:
            return None
        tokens = batch * seq_len
        return min(rows, key=lambda r: (r["batch"] is not None,
                                        abs(math.log((r["batch"] or 1) * (r["seq_len"] or 1) / tokens))))

    def step_seconds(self, spec: StudentSpec, phase: str, batch: int, seq_len: int) -> tuple[float, str]:
        """Seconds of one step of ``batch`` sequences of ``seq_len`` tokens, and ``measured``/``assumed``."""
        row = self.measured(spec, phase, batch, seq_len)
        if row is not None:
            return batch * seq_len / row["tokens_per_s"], "measured"
        return self.assumption.step_seconds(spec, phase, batch, seq_len), "assumed"

    def machines(self) -> list[str]:
        """The machines the measured rows ran on (rates given by hand name none)."""
        return sorted({r["machine"] for r in self.rows if r["machine"] != "given"})


def _positive(text: str, value: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number > 0 or math.isinf(number):
        raise ConfigError(f"--throughput {value!r}: the number after '=' must be positive, got {text!r}.")
    return number


def _shape_of(model: str, value: str) -> StudentSpec:
    from ..flops import resolve_model

    try:
        return resolve_model(model.strip()).spec
    except Exception as err:  # noqa: BLE001 - ModelError, or a Hub name offline
        raise ConfigError(f"--throughput {value!r}: {model!r} names no shape gapkit knows offline "
                          f"({str(err).rstrip('.')}); use a preset or shape like 3L-384H-1,4E.") from None
