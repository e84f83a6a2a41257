"""A run folder, consistent with the checkpoint it resumes from whatever the instant of a kill.

    config.json          the resolved DistillSpec
    metrics.jsonl        one JSON row per log/eval event: step, split, metric, value
    routing.parquet      routing statistics of MiniMoE students: step, split, layer, block, expert ...
    checkpoint/          the latest resumable state (model, optimizer, scheduler, RNG of every rank, loop)
    best/                the best model so far as a Hugging Face folder (+ tokenizer), with
                         predictions.safetensors: its predictions and the labels of every scored split
    result.json          the result (gapkit.distill.result schema); present once the run has ended
    failure.json         only when a run stopped on a NaN/inf loss: step, loss term, value

The invariant: every row of ``metrics.jsonl`` and ``routing.parquet`` at or before the checkpoint's
step is on disk when the checkpoint is written (routing rows are flushed first), and on resume every
row after it is dropped (the resumed run writes them again, identically). ``checkpoint/`` and
``best/`` are swapped in with :func:`gapkit.io.atomic_dir` and repaired by :func:`recover_dir`;
``result.json`` and ``routing.parquet`` are written with :func:`gapkit.io.atomic_write`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..io import atomic_dir, atomic_write, json_dumps, kill_point, recover_dir
from .checkpointing import has_training_state
from .result import RunResult

__all__ = ["RunFolder", "in_use", "PREDICTIONS"]

PREDICTIONS = "predictions.safetensors"  # in best/: "<split>.prediction", "<split>.label"
LOG_FILES = ("metrics.jsonl", "routing.parquet", "result.json", "failure.json")
LOG_DIRS = ("checkpoint", "best", "tensorboard")


class RunFolder:
    """The files of one run; ``writer`` is False on data-parallel ranks other than 0 (they write nothing)."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.dir = Path(path)
        self.writer = writer
        self.routing: list[dict] = []
        self.tensorboard = None
        self._lock: int | None = None

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def best_dir(self) -> Path:
        return self.dir / "best"

    @property
    def result_file(self) -> Path:
        return self.dir / "result.json"

    # -- before a run: what is there, and may this spec use it? --------------------------------------
    def inspect(self, config: dict, resume: bool) -> str:
        """Decide what a run with resolved ``config`` does with this folder; nothing is written.

        Returns:
            ``fresh`` (empty or absent: start), ``restart`` (a run of the same config died before its
            first checkpoint: start over), ``resume`` (continue from ``checkpoint/``) or ``finished``
            (the same config already ended: nothing to do).
        Raises:
            ConfigError: the folder holds something this run must not touch (another config, a finished
            or failed run without ``--resume``, a file), or ``--resume`` finds no run.
        """
        d = self.dir
        if d.exists() and not d.is_dir():
            raise ConfigError(f"output_dir {d} is a file, not a folder: choose another output_dir.")
        if d.is_dir():
            self.acquire()
        # A file a kill left beside its name (``*.tmp``) was never part of a run.
        if not d.exists() or all(p.name.endswith(".tmp") for p in d.iterdir()):
            if resume:
                raise ConfigError(f"There is no run to resume in {d}: drop --resume to start one there.")
            return "fresh"
        saved = self._saved_config()
        if saved is None:
            raise ConfigError(f"output_dir {d} is not empty and holds no gapkit run (no config.json): choose an "
                              f"empty or new output_dir.")
        same = _comparable(saved) == _comparable(config)
        if self.result_file.exists():
            result = RunResult.read(self.result_file)
            if result.status == "failed":
                raise ConfigError(f"Run folder {d} holds a failed run ({result.reason}); see {d / 'failure.json'}: "
                                  f"choose another output_dir (or delete the folder) to run again.")
            if not resume:
                raise ConfigError(f"Run folder {d} already holds a finished run: choose another output_dir "
                                  f"(results are never overwritten), or pass --resume to read it back.")
            if not same:
                raise ConfigError(f"Run folder {d} holds a finished run of a different config: use another "
                                  f"output_dir for the changed config (results are never overwritten).")
            return "finished"
        if not same:
            raise ConfigError(f"Run folder {d} holds an unfinished run of a different config ({d / 'config.json'}): "
                              f"resume it with that config, or choose another output_dir.")
        if self.has_checkpoint():
            if not resume:
                raise ConfigError(f"Run folder {d} holds an unfinished run: pass --resume to continue it, or choose "
                                  f"another output_dir.")
            return "resume"
        return "restart"  # died before its first checkpoint: nothing resumable is lost by starting over

    def has_checkpoint(self) -> bool:
        """Is there a complete checkpoint (after repairing an interrupted swap)?"""
        if self.writer:
            recover_dir(self.checkpoint_dir)
        else:  # another rank may be repairing it: look at both names
            old = self.checkpoint_dir.with_name("checkpoint.old")
            return has_training_state(self.checkpoint_dir) or has_training_state(old)
        return has_training_state(self.checkpoint_dir)

    def _saved_config(self) -> dict | None:
        path = self.dir / "config.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"{path} is not valid JSON (a corrupt run folder): move it away and rerun.") from None

    # -- starting ------------------------------------------------------------------------------------
    def start(self, config_json: str, wipe: bool) -> None:
        """Create the folder and write ``config.json``; ``wipe`` removes what a dead run left."""
        if not self.writer:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self.acquire()
            if (self.dir / "config.json").exists():  # another process started a run here meanwhile
                raise ConfigError(f"Run folder {self.dir} was taken by another run while this one was being "
                                  f"built: choose another output_dir.")
        for leftover in self.dir.glob("*.tmp"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        if wipe:
            for name in LOG_FILES:
                (self.dir / name).unlink(missing_ok=True)
            for name in LOG_DIRS:
                for suffix in ("", ".tmp", ".old"):
                    shutil.rmtree(self.dir / (name + suffix), ignore_errors=True)
        atomic_write(self.dir / "config.json", config_json)

    def rewind(self, step: int) -> None:
        """On resume from a checkpoint at ``step``: drop every row written after it (they are written
        again by the resumed run) and a half-written last line; reload the routing rows up to it."""
        if not self.writer:
            return
        recover_dir(self.best_dir)
        path = self.dir / "metrics.jsonl"
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # the line a kill cut short
                    continue
                if row.get("step", step + 1) <= step:
                    kept.append(line + "\n")
            atomic_write(path, "".join(kept))
        routing = self.dir / "routing.parquet"
        if routing.exists():
            import pandas as pd

            df = pd.read_parquet(routing)
            self.routing = df[df["step"] <= step].to_dict("records")
            self.flush_routing()

    # -- during a run --------------------------------------------------------------------------------
    def log(self, rows: list[dict]) -> None:
        if not (self.writer and rows):
            return
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write("".join(json_dumps(row) + "\n" for row in rows))
        kill_point("metrics.appended")
        if self.tensorboard is not None:
            for row in rows:
                if row.get("value") is not None:
                    self.tensorboard.add_scalar(f"{row['split']}/{row['metric']}", row["value"], row["step"])

    def add_routing(self, rows: list[dict]) -> None:
        if self.writer:
            self.routing.extend(rows)

    def flush_routing(self) -> None:
        if self.writer and self.routing:
            import pandas as pd

            frame = pd.DataFrame(self.routing)
            atomic_write(self.dir / "routing.parquet", lambda p: frame.to_parquet(p, index=False))

    def save_best(self, save) -> None:
        """Swap in a new ``best/``; ``save(folder)`` writes the model into the folder it is given."""
        if self.writer:
            with atomic_dir(self.best_dir) as tmp:
                save(tmp)

    def write_result(self, result: RunResult) -> None:
        if self.writer:
            atomic_write(self.result_file, result.to_json())

    def write_failure(self, failure: dict) -> None:
        if self.writer:
            atomic_write(self.dir / "failure.json", json_dumps(failure, indent=2))

    # -- one writer at a time ----------------------------------------------------------------------
    def acquire(self) -> None:
        """Hold the folder for this process: an exclusive ``flock`` on the folder itself, which the kernel
        releases when the process ends, however it ends (a SIGKILL included), so a crash never leaves it
        held. (Advisory, and local: on a network file system two machines may not see each other's.)

        Raises:
            ConfigError: another process holds it (the same run started twice).
        """
        if not self.writer or self._lock is not None:
            return
        import fcntl

        fd = os.open(self.dir, os.O_RDONLY)  # the folder itself: nothing is written to take the lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"Run folder {self.dir} is in use by another gapkit process: let it finish (or stop "
                              f"it), then run again.") from None
        self._lock = fd

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        self.release()


def in_use(folder: str | Path) -> bool:
    """Does a live process hold this run folder (see :meth:`RunFolder.acquire`)?"""
    import fcntl

    if not Path(folder).is_dir():
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _comparable(config: dict) -> str:
    """A config as compared for reuse: everything but where the run lives."""
    return json.dumps({k: v for k, v in config.items() if k != "output_dir"}, sort_keys=True)
