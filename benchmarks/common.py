"""Shared helpers for gapkit benchmarks: machine description and appending result rows."""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
from pathlib import Path

import torch

# Where rows go: results/bench, or the folder BENCH_DIR names (benchmarks/gpu.sh --dry-run: CPU rows under
# $OUT, never mixed into the recorded tables).
RESULTS = Path(os.environ.get("BENCH_DIR") or Path(__file__).resolve().parents[1] / "results" / "bench")


def machine() -> dict:
    """Where a number was measured: host CPU / GPU, cores, torch build."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return dict(
        machine=f"{cpu}; {os.cpu_count()} cores" + (f"; {gpu}" if gpu else ""),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def append_rows(name: str, rows: list[dict]) -> Path:
    """Append ``rows`` to ``results/bench/<name>.csv`` (header written once; existing rows kept)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    fields = list(rows[0])
    exists = path.exists() and path.stat().st_size > 0
    if exists:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header and header != fields:
            raise SystemExit(f"{path} has columns {header}, expected {fields}: move it aside to start a new table.")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if not exists:
            writer.writeheader()
        writer.writerows(rows)
    return path


def timed(fn, device) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after (CUDA launches are asynchronous)."""
    import time

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def finish(name: str, rows: list[dict], twin: str, record: bool = True) -> int:
    """A benchmark's exit status: 1, saying so, when a row's ``identical`` is false (a fast path that
    changed the numbers measured nothing worth keeping); else 0, the rows appended to
    ``results/bench/<name>.csv`` when ``record``. ``twin`` names what each row was compared with."""
    if not all(r["identical"] for r in rows):
        print(f"# FAILED: a student differs from its {twin}")
        return 1
    if record:
        path = append_rows(name, rows)
        print(f"# appended {len(rows)} rows to {path}")
    return 0
