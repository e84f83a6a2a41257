"""Files that survive a kill at any instant: one helper per mechanism, used for every file gapkit writes.

* :func:`atomic_write` writes a file beside its final name and renames it into place (``os.replace``
  is atomic on POSIX), so a reader sees the old file or the new one, never half of one.
* :func:`atomic_dir` does the same for a folder (a checkpoint, a saved model). A folder cannot be
  swapped in one system call, so the swap is two renames, ``path -> path.old`` then
  ``path.tmp -> path``; :func:`recover_dir` repairs a folder killed between the two (it puts
  ``path.old`` back) and is called before any folder written this way is read.
* :func:`json_dumps` refuses the bare ``NaN``/``Infinity`` that Python's json writes by default and
  other JSON readers reject.
* :func:`save_safetensors` writes a safetensors file with the permissions of any other file (the
  umask's), which safetensors' own ``save_file`` does not.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_write", "atomic_dir", "recover_dir", "json_dumps", "finite_or_none", "kill_point",
           "save_safetensors"]

_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Fault injection for gapkit's kill tests: with ``GAPKIT_KILL_AT=NAME:N[,NAME:N ...]`` in the
    environment the process SIGKILLs itself the N-th time it passes point NAME (no cleanup, like a real
    kill), at the first of the listed points it reaches. Points:
    ``<file>.tmp`` (a file written beside its name, not yet renamed), ``<folder>.written`` and
    ``<folder>.between`` (an atomic folder complete, and half-swapped), ``metrics.appended``, ``step``,
    ``finish``. Without the variable this is one dictionary lookup."""
    targets = os.environ.get("GAPKIT_KILL_AT")
    if not targets:
        return
    _passes[name] = _passes.get(name, 0) + 1
    for target in targets.split(","):
        point, _, count = target.rpartition(":")
        if point == name and _passes[name] == int(count):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``path`` atomically.

    Args:
        path: the final file.
        data: text, bytes, or a function that writes the file at the temporary path it is given
            (e.g. ``lambda p: df.to_parquet(p)``).
    Returns:
        ``path``.
    """
    path = Path(path)
    tmp = _tmp(path)
    if callable(data):
        data(tmp)
    elif isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    kill_point(f"{path.name}.tmp")
    os.replace(tmp, path)
    return path


def recover_dir(path: str | os.PathLike) -> Path:
    """Repair a folder whose :func:`atomic_dir` swap was killed half-way.

    Killed between the two renames, only ``path.old`` (the previous complete folder) is left: it is
    put back. A ``path.tmp`` is always an unfinished write and is removed; a ``path.old`` beside a
    complete ``path`` is a leftover of the last step of a swap and is removed too.
    """
    path = Path(path)
    old, tmp = _old(path), _tmp(path)
    if not path.exists() and old.exists():
        old.rename(path)
    for leftover in (old, tmp):
        if leftover.exists():
            shutil.rmtree(leftover)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: yields an empty temporary folder; on a clean exit it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    recover_dir(path)
    tmp, old = _tmp(path), _old(path)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kill_point(f"{path.name}.written")
    if path.exists():
        path.rename(old)
        kill_point(f"{path.name}.between")
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth of dicts/lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` that never writes a bare NaN/Infinity (they become null; strict JSON readers
    reject them, and a NaN that looks like a number is the wrong kind of quiet)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> contiguous CPU tensor) to the safetensors file ``path``.

    safetensors' ``save_file`` (0.8) creates its file with mode 0600 whatever the umask, so a checkpoint
    would be unreadable to the rest of a group that can read the run's other files. The file gets the
    mode ``open`` gives any new file instead: 0666 less the umask (0644 under the usual 022).

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())
    return path
