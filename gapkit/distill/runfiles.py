"""A run folder, consistent with the checkpoint it resumes from whatever the instant of a kill.

    config.json          the resolved DistillSpec
    metrics.jsonl        one JSON row per log/eval event: step, split, metric, value
    routing.parquet      routing statistics of MiniMoE students: step, split, layer, block, expert ...
    checkpoint/          the latest resumable state (model, optimizer, scheduler, RNG of every rank, loop)
    best/                the best model so far as a Hugging Face folder (+ tokenizer), with
                         predictions.safetensors: its predictions and the labels of every scored split
    result.json          the result (gapkit.distill.result schema); present once the run has ended
    failure.json         only when a run stopped on a NaN/inf loss: step, loss term, value
    progress.json        how far the run is (:class:`Progress`): step, total, rate, when it (re)started;
                         rewritten at every log step and when the run ends
    tracking.json        only with ``train.tracking``: the experiment tracker's run id (a resumed run continues it)
    mlruns/              only with ``train.tracking: mlflow`` and no ``MLFLOW_TRACKING_URI``: its MLflow file store

The invariant: every row of ``metrics.jsonl`` and ``routing.parquet`` at or before the checkpoint's
step is on disk when the checkpoint is written (routing rows are flushed first), and on resume every
row after it is dropped (the resumed run writes them again, identically). ``checkpoint/`` and
``best/`` are swapped in with :func:`gapkit.io.atomic_dir` and repaired by :func:`recover_dir`;
``result.json``, ``progress.json``, ``tracking.json`` and ``routing.parquet`` are written with
:func:`gapkit.io.atomic_write`. (``mlruns/`` is MLflow's own, outside this invariant, as TensorBoard's logs are.)

This module alone knows the layout: :class:`RunFolder` writes a run folder, :class:`RunDir` reads one
(status, result, best weights, predictions, routing, tokenizer, failure) for sweeps, analysis,
inspection and the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError
from ..io import atomic_dir, atomic_write, json_dumps, kill_point, recover_dir
from .checkpointing import has_training_state
from .result import OBSERVING, RunResult, run_id

__all__ = ["RunFolder", "RunDir", "RunStatus", "Progress", "ProgressMeter", "in_use", "holds_tokenizer",
           "config_changes", "PREDICTIONS", "EXPORTED_FILES"]

# The names of the layout (the module docstring); nothing outside this module spells them.
CONFIG = "config.json"
METRICS = "metrics.jsonl"
ROUTING = "routing.parquet"
RESULT = "result.json"
FAILURE = "failure.json"
PROGRESS = "progress.json"
TRACKING = "tracking.json"
MLRUNS = "mlruns"
CHECKPOINT = "checkpoint"
BEST = "best"
PREDICTIONS = "predictions.safetensors"  # in best/: "<split>.prediction", "<split>.label"
FINAL_WEIGHTS = "model.safetensors"  # in checkpoint/: the trained module's state ("model." keys)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")  # any of them: best/ has a tokenizer
LOG_FILES = (METRICS, ROUTING, RESULT, FAILURE, PROGRESS, TRACKING)
LOG_DIRS = (CHECKPOINT, BEST, "tensorboard", MLRUNS)
# What re-analysis of a run reads (an exported sweep keeps only these; no weights).
EXPORTED_FILES = (RESULT, CONFIG, f"{BEST}/{PREDICTIONS}", ROUTING)


class RunLayout:
    """Where each file of a run folder lives: the one place the layout is spelled, for the writer
    (:class:`RunFolder`) and the reader (:class:`RunDir`) alike."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)

    @property
    def config_file(self) -> Path:
        return self.dir / CONFIG

    @property
    def result_file(self) -> Path:
        return self.dir / RESULT

    @property
    def failure_file(self) -> Path:
        return self.dir / FAILURE

    @property
    def best_dir(self) -> Path:
        return self.dir / BEST

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / CHECKPOINT

    @property
    def final_weights(self) -> Path:
        """The trained module's state at the last checkpoint (``model.``-prefixed keys)."""
        return self.checkpoint_dir / FINAL_WEIGHTS

    @property
    def predictions_file(self) -> Path:
        return self.best_dir / PREDICTIONS

    @property
    def tracking_file(self) -> Path:
        """Where the experiment tracker's run id is kept, so that a resumed run continues the same tracked run."""
        return self.dir / TRACKING

    @property
    def mlruns_dir(self) -> Path:
        """The default MLflow file store of ``train.tracking: mlflow`` (no ``MLFLOW_TRACKING_URI``)."""
        return self.dir / MLRUNS


class RunFolder(RunLayout):
    """The files of one run; ``writer`` is False on data-parallel ranks other than 0 (they write nothing)."""

    def __init__(self, path: str | Path, writer: bool = True):
        super().__init__(path)
        self.writer = writer
        self.routing: list[dict] = []
        self.tensorboard = None
        self.tracker = None  # an experiment tracker (gapkit.distill.tracking): log(rows), log_result(result), close()
        self.progress: ProgressMeter | None = None
        self._lock: int | None = None

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
                raise ConfigError(f"Run folder {d} holds a failed run ({result.reason}); see {self.failure_file}: "
                                  f"choose another output_dir (or delete the folder) to run again.")
            if not resume:
                raise ConfigError(f"Run folder {d} already holds a finished run: choose another output_dir "
                                  f"(results are never overwritten), or pass --resume to read it back.")
            if not same:
                raise ConfigError(f"Run folder {d} holds a finished run of a different config: use another "
                                  f"output_dir for the changed config (results are never overwritten).")
            return "finished"
        if not same:
            raise ConfigError(f"Run folder {d} holds an unfinished run of a different config ({d / CONFIG}): "
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
        return RunDir(self.dir).config()

    # -- starting ------------------------------------------------------------------------------------
    def start(self, config_json: str, wipe: bool) -> None:
        """Create the folder and write ``config.json``; ``wipe`` removes what a dead run left."""
        if not self.writer:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self.acquire()
            if (self.dir / CONFIG).exists():  # another process started a run here meanwhile
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
        atomic_write(self.dir / CONFIG, config_json)

    def rewind(self, step: int) -> None:
        """On resume from a checkpoint at ``step``: drop every row written after it (they are written
        again by the resumed run) and a half-written last line; reload the routing rows up to it."""
        if not self.writer:
            return
        recover_dir(self.best_dir)
        path = self.dir / METRICS
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
        routing = self.dir / ROUTING
        if routing.exists():
            import pandas as pd

            df = pd.read_parquet(routing)
            self.routing = df[df["step"] <= step].to_dict("records")
            self.flush_routing()

    # -- during a run --------------------------------------------------------------------------------
    def log(self, rows: list[dict]) -> None:
        if not (self.writer and rows):
            return
        with open(self.dir / METRICS, "a") as f:
            f.write("".join(json_dumps(row) + "\n" for row in rows))
        kill_point("metrics.appended")
        if self.tensorboard is not None:
            for row in rows:
                if row.get("value") is not None:
                    self.tensorboard.add_scalar(f"{row['split']}/{row['metric']}", row["value"], row["step"])
        if self.tracker is not None:
            self.tracker.log(rows)

    def start_progress(self, step: int, total_steps: int, launched_at: float, clock=time.time) -> None:
        """Begin this process's ``progress.json``: a run about to take its first step (``step`` 0, or the
        step of the checkpoint it resumed); ``launched_at``: when the process began building it."""
        if self.writer:
            self.progress = ProgressMeter(step, total_steps, launched_at, clock)
            self._write_progress()

    def log_progress(self, step: int, tokens_per_s: float | None = None) -> None:
        """Record that the run reached ``step`` (at a log step)."""
        if self.progress is not None:
            self.progress.at(step, tokens_per_s)
            self._write_progress()

    def _write_progress(self) -> None:
        atomic_write(self.dir / PROGRESS, json_dumps(asdict(self.progress.record), indent=1))

    def add_routing(self, rows: list[dict]) -> None:
        if self.writer:
            self.routing.extend(rows)

    def flush_routing(self) -> None:
        if self.writer and self.routing:
            import pandas as pd

            frame = pd.DataFrame(self.routing)
            atomic_write(self.dir / ROUTING, lambda p: frame.to_parquet(p, index=False))

    def save_best(self, save) -> None:
        """Swap in a new ``best/``; ``save(folder)`` writes the model into the folder it is given."""
        if self.writer:
            with atomic_dir(self.best_dir) as tmp:
                save(tmp)

    def write_result(self, result: RunResult) -> None:
        if self.writer:
            atomic_write(self.result_file, result.to_json())
            if self.progress is not None:  # the record of how the run went stays: pending runs are timed by it
                self.progress.end(result.steps)
                self._write_progress()
            if self.tracker is not None:
                self.tracker.log_result(result)

    def write_failure(self, failure: dict) -> None:
        if self.writer:
            atomic_write(self.failure_file, json_dumps(failure, indent=2))

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
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
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
    """A config as compared for reuse: everything but where the run lives and whether a tracker watches it."""
    kept = {k: v for k, v in config.items() if k != "output_dir"}
    if isinstance(kept.get("train"), dict):
        kept["train"] = {k: v for k, v in kept["train"].items() if k not in OBSERVING}
    return json.dumps(kept, sort_keys=True)


# ----------------------------------------------------------------------------------------------------
# Progress: how far a run is, and how fast it goes
# ----------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """How far a run is (``progress.json``), rewritten atomically by the process training it at each log
    step and when the run ends. Times are Unix seconds (``time.time()``) of the machine training it.

    Attributes:
        step: optimizer steps taken; ``total_steps``: the step the run ends at.
        resumed_from: the step this process started at (0, or the step of the checkpoint it resumed).
        launched_at: when this process began building the run (data, models, teacher).
        started_at: when it was built and took to stepping (at ``resumed_from``).
        updated_at: the last write.
        steps_per_s: optimizer steps per second over the recent window (the last :attr:`ProgressMeter.WINDOW`
            log steps, the evaluations and checkpoints among them included); None before the first log step.
        tokens_per_s: training tokens per second at the last log step (the trainer's own measure), or None.
        updates: writes since ``started_at``.
        host, pid: the process training it (the runs of a sweep group share one, stepping together).
        ended: the run has ended (its ``result.json`` is written).
    """

    step: int
    total_steps: int
    resumed_from: int
    launched_at: float
    started_at: float
    updated_at: float
    steps_per_s: float | None = None
    tokens_per_s: float | None = None
    updates: int = 0
    host: str = ""
    pid: int = 0
    ended: bool = False

    @property
    def remaining_steps(self) -> int:
        return max(self.total_steps - self.step, 0)

    @property
    def mean_step_s(self) -> float | None:
        """Seconds per step since this process took to stepping (its evaluations and checkpoints
        included), or None before its first step was logged."""
        steps = self.step - self.resumed_from
        return (self.updated_at - self.started_at) / steps if steps > 0 and self.updated_at > self.started_at else None

    @property
    def build_s(self) -> float:
        """Seconds this process took to build the run before its first step."""
        return max(self.started_at - self.launched_at, 0.0)

    def seconds_left(self, now: float) -> float | None:
        """Time left at the recent rate: ``remaining_steps / steps_per_s``, counted from the last update
        (never below 0); None before the run has a rate."""
        if self.ended:
            return 0.0
        if not self.steps_per_s:
            return None
        return max(self.remaining_steps / self.steps_per_s - max(now - self.updated_at, 0.0), 0.0)

    def quiet_s(self, now: float) -> float | None:
        """Seconds since the last update when that is much longer than the run's updates usually are apart
        (3 times their mean gap, at least 2 minutes: a hang, or an evaluation longer than usual), else None."""
        since = now - self.updated_at
        usual = (self.updated_at - self.started_at) / self.updates if self.updates else 0.0
        return since if since > max(120.0, 3 * usual) else None

    @classmethod
    def from_dict(cls, data: dict) -> "Progress":
        names = [f.name for f in fields(cls)]
        return cls(**{k: data[k] for k in names if k in data})


class ProgressMeter:
    """The writer's side of :class:`Progress`: keeps the recent window of (time, step) the rate is taken over.

    Args:
        step: the step the process starts at; total_steps: where the run ends.
        launched_at: when the process began building the run.
        clock: a function returning the time (``time.time``; tests give a fake clock).
    """

    WINDOW = 10  # log steps: long enough to smooth an evaluation or checkpoint pause, short enough to follow a change

    def __init__(self, step: int, total_steps: int, launched_at: float, clock=time.time):
        self.clock = clock
        now = clock()
        self.record = Progress(step=step, total_steps=total_steps, resumed_from=step, launched_at=launched_at,
                               started_at=now, updated_at=now, host=socket.gethostname(), pid=os.getpid())
        self._points = deque([(now, step)], maxlen=self.WINDOW + 1)

    def at(self, step: int, tokens_per_s: float | None = None) -> None:
        now = self.clock()
        self._points.append((now, step))
        t0, s0 = self._points[0]
        record = self.record
        record.step, record.updated_at, record.updates = step, now, record.updates + 1
        record.tokens_per_s = tokens_per_s
        if now > t0 and step > s0:
            record.steps_per_s = (step - s0) / (now - t0)

    def end(self, step: int) -> None:
        self.record.step, self.record.updated_at, self.record.ended = step, self.clock(), True


# ----------------------------------------------------------------------------------------------------
# Reading a run folder
# ----------------------------------------------------------------------------------------------------
class RunStatus(NamedTuple):
    """Where a run stands: ``state`` and, for ``failed`` and ``stale``, a sentence saying why.

    States: ``done`` (ended, not failed), ``failed`` (ended on a failure, or a record that cannot be read),
    ``stale`` (the folder holds a run of another config), ``running`` (a live process holds it),
    ``interrupted`` (started, not ended, no process on it: resumable) and ``pending`` (nothing there).
    """

    state: str
    reason: str | None = None


class RunDir(RunLayout):
    """One run folder, read: the only reader of the layout that :class:`RunFolder` writes.

    Nothing here writes; a file that is there but unreadable is a :class:`~gapkit.errors.ConfigError`
    naming it (or, from :meth:`status`, a ``failed`` state with that sentence), never a default value.
    """

    @classmethod
    def owning(cls, path: str | Path) -> "RunDir | None":
        """The run whose ``best/`` or ``checkpoint/`` ``path`` names (whether or not it exists yet), else None."""
        path = Path(path)
        return cls(path.parent) if path.name in (BEST, CHECKPOINT) else None

    @classmethod
    def of(cls, path: str | Path) -> "RunDir | None":
        """The run folder ``path`` is, or lies directly in (its ``best/`` or ``checkpoint/``), else None."""
        path = Path(path)
        if cls(path).is_run():
            return cls(path)
        owner = cls.owning(path)
        return owner if owner is not None and owner.is_run() else None

    # -- what is there -------------------------------------------------------------------------------
    def started(self) -> bool:
        """Does the folder hold anything (a run began here)?"""
        return self.dir.is_dir() and any(self.dir.iterdir())

    def is_run(self) -> bool:
        """Is this a gapkit run folder: its config.json a run config (``stage``), not a model config?"""
        try:
            config = self.config()
        except ConfigError:
            return False
        return isinstance(config, dict) and "stage" in config and "model_type" not in config

    def has_best(self) -> bool:
        """Are there best weights (a complete ``best/`` Hugging Face folder)?"""
        return (self.best_dir / CONFIG).is_file()

    def routing(self) -> Path | None:
        """The run's routing statistics (``routing.parquet``; MiniMoE students only), or None."""
        path = self.dir / ROUTING
        return path if path.is_file() else None

    def tokenizer_dir(self) -> Path | None:
        """The folder holding the tokenizer saved with the best weights, or None (e.g. a synthetic task)."""
        return self.best_dir if holds_tokenizer(self.best_dir) else None

    # -- records -------------------------------------------------------------------------------------
    def config(self) -> dict | None:
        """The run's resolved config (``config.json``), or None when it has none."""
        if not self.config_file.is_file():
            return None
        try:
            return json.loads(self.config_file.read_text())
        except ValueError:
            raise ConfigError(f"{self.config_file} is not valid JSON (a corrupt run folder): move it away and "
                              f"rerun.") from None

    def result(self) -> RunResult | None:
        """The run's :class:`RunResult`, or None until the run has ended.

        Raises:
            ConfigError: ``result.json`` is there but is not one of gapkit's results.
        """
        return RunResult.read(self.result_file) if self.result_file.is_file() else None

    def progress(self) -> Progress | None:
        """How far the run is (:class:`Progress`), or None before its first step (or for a run from before
        gapkit recorded progress).

        Raises:
            ConfigError: ``progress.json`` is there but is not a progress record.
        """
        path = self.dir / PROGRESS
        if not path.is_file():
            return None
        try:
            return Progress.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, AttributeError):
            raise ConfigError(f"{path} is not a readable progress record: the run rewrites it at its next log "
                              f"step (delete it if no run will).") from None

    def failure(self) -> dict | None:
        """What stopped a run on a NaN/inf loss (``failure.json``: step, loss term, value), or None."""
        if not self.failure_file.is_file():
            return None
        try:
            failure = json.loads(self.failure_file.read_text())
        except ValueError:
            failure = None
        if not isinstance(failure, dict):
            raise ConfigError(f"{self.failure_file} is not a readable failure record (not a JSON object): the "
                              f"run's result.json says why it stopped.")
        return failure

    def predictions(self, split: str):
        """(predictions, labels) tensors the best weights made on ``split``, or None when the run has no
        ``best/predictions.safetensors`` or that split is not in it."""
        if not self.predictions_file.is_file():
            return None
        from safetensors.torch import load_file

        tensors = load_file(self.predictions_file)
        if f"{split}.prediction" not in tensors or f"{split}.label" not in tensors:
            return None
        return tensors[f"{split}.prediction"], tensors[f"{split}.label"]

    # -- status --------------------------------------------------------------------------------------
    def changes(self, config: dict) -> list[str]:
        """How the config recorded here differs from ``config`` (a resolved run config), one phrase per
        setting (``train.lr: 0.001 here, 0.0003 now``); empty when they are the same run (:func:`run_id`)
        or nothing is recorded yet.

        Raises:
            ConfigError: config.json or result.json is there but unreadable.
        """
        config = json.loads(json.dumps(config))  # as config.json holds it (DistillSpec.to_json): tuples as lists
        saved = self.config()
        if saved is None:
            result = self.result()
            if result is None or result.run_id == run_id(config):
                return []
            return [f"its result.json is of config {result.run_id}, this one is {run_id(config)}"]
        if run_id(saved) == run_id(config):
            return []
        return config_changes(saved, config) or [f"config {run_id(saved)} here, {run_id(config)} now"]

    def status(self, config: dict | None = None) -> RunStatus:
        """Where the run stands (:class:`RunStatus`); with ``config`` (the resolved config that should be
        here), a folder holding a run of another config is ``stale``, whatever its state."""
        try:
            changes = self.changes(config) if config is not None else []
            if changes:
                shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
                return RunStatus("stale", f"{self.dir} holds a run of another config ({shown}): results are never "
                                          f"overwritten, so move that folder aside (or choose a new output_dir) to "
                                          f"run this config.")
            result = self.result()
        except ConfigError as err:
            return RunStatus("failed", str(err))
        if result is not None:
            return RunStatus("failed", result.reason) if result.status == "failed" else RunStatus("done")
        if self.started():
            return RunStatus("running") if in_use(self.dir) else RunStatus("interrupted")
        return RunStatus("pending")


def holds_tokenizer(folder: str | Path) -> bool:
    """Does ``folder`` hold a saved Hugging Face tokenizer?"""
    return Path(folder).is_dir() and any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def config_changes(saved: dict, config: dict) -> list[str]:
    """The settings (dotted keys) whose values differ between two run configs, ``output_dir`` and
    ``name`` left out as :func:`run_id` leaves them out: ``"train.lr: 0.001 here, 0.0003 now"``."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if (not prefix and k in ("output_dir", "name")) or (prefix == "train." and k in OBSERVING):
                continue
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    old, new = flat(saved), flat(config)
    absent = object()
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, absent), new.get(key, absent)
        if a != b:
            changes.append(f"{key}: {'absent' if a is absent else json.dumps(a)} here, "
                           f"{'absent' if b is absent else json.dumps(b)} now")
    return changes
