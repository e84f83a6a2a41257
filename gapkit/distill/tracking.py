"""Experiment tracking: a run's settings, metrics and result sent to MLflow as well (``train.tracking: mlflow``).

The run folder stays the record (``metrics.jsonl``, ``result.json``); the tracker mirrors it, rank 0 only,
through MLflow's client (``mlflow-skinny``, the ``mlflow`` extra):

* **where**: ``$MLFLOW_TRACKING_URI`` when set (a server, a shared file store, a database), else a file
  store in the run folder (:attr:`RunFolder.mlruns_dir`), which works offline with no server. MLflow 3
  keeps its file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; gapkit turns that on for
  a ``file:`` store only (``mlflow-skinny`` has no database backend), and so must a reader
  (``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ...``).
* **what**: the experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``gapkit``); one MLflow run per gapkit run,
  named after it and tagged with its ``run_id`` and folder; the resolved config flattened to params
  (``train.lr``, ...); every ``metrics.jsonl`` row as metric ``<split>/<metric>`` at its step; the result's
  rows as ``result/<model>/<split>/<metric>``, and its status.
* **resume**: the MLflow run's id is kept in the run folder (:attr:`RunFolder.tracking_file`), and a resumed
  run continues that MLflow run. Rows the killed process had logged after its last checkpoint are logged
  again by the resumed one, so MLflow's history may hold such a step twice (``metrics.jsonl`` holds it once).
"""

from __future__ import annotations

import json
import os
import re

from ..errors import ConfigError
from ..io import atomic_write

__all__ = ["MlflowTracker", "check_tracker", "open_tracker", "flat_params"]

EXPERIMENT = "gapkit"
MISSING = ("train.tracking: mlflow needs the mlflow package: pip install 'gapkit[mlflow]' (or set train.tracking "
           "to off).")
_KEY_CHARS = re.compile(r"[^\w\-. /]")  # MLflow keys: alphanumerics, _ - . space /


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A resolved config as MLflow params: dotted keys (``train.lr``), values as JSON text."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def metric_key(*parts: str) -> str:
    """``split/metric`` as an MLflow metric key (a character MLflow refuses becomes ``_``)."""
    return "/".join(_KEY_CHARS.sub("_", str(p)) for p in parts)


class MlflowTracker:
    """One gapkit run mirrored to one MLflow run (see the module docstring).

    Args:
        folder: the run's :class:`~gapkit.distill.runfiles.RunFolder` (rank 0's).
        config: the resolved run config (``DistillSpec.to_dict()``).
        name, gapkit_run_id: the run's name and id (:func:`gapkit.distill.result.run_id`).
        resume: continue the MLflow run recorded in the folder, when there is one.
    Raises:
        ConfigError: mlflow is not installed.
    """

    def __init__(self, folder, config: dict, name: str, gapkit_run_id: str, resume: bool):
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(MISSING) from None
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or folder.mlruns_dir.resolve().as_uri()
        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        self.folder = folder
        self.run_id = self._recorded() if resume else None
        if self.run_id is None:
            name_ = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
            experiment = self.client.get_experiment_by_name(name_)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name_)
            run = self.client.create_run(experiment_id, run_name=name,
                                         tags={"gapkit.run_id": gapkit_run_id, "gapkit.run_dir": str(folder.dir)})
            self.run_id = run.info.run_id
            atomic_write(folder.tracking_file, json.dumps({"mlflow_run_id": self.run_id, "tracking_uri": self.uri}))
            params = [Param(k, v) for k, v in flat_params(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        self._status = "KILLED"  # until a result says otherwise

    def _recorded(self) -> str | None:
        """The MLflow run the folder recorded, when it is in this tracking store."""
        path = self.folder.tracking_file
        if not path.is_file():
            return None
        try:
            recorded = json.loads(path.read_text())
            if recorded.get("tracking_uri") != self.uri:
                return None  # another store: this one starts its own run
            return self.client.get_run(recorded["mlflow_run_id"]).info.run_id
        except Exception:  # noqa: BLE001 - an unreadable record or a run the store lost: start a new MLflow run
            return None

    def log(self, rows: list[dict]) -> None:
        """``metrics.jsonl`` rows (step, split, metric, value) as MLflow metrics (rows without a value skipped)."""
        from mlflow.entities import Metric

        now = _millis()
        metrics = [Metric(metric_key(r["split"], r["metric"]), float(r["value"]), now, int(r["step"]))
                   for r in rows if r.get("value") is not None]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_result(self, result) -> None:
        """The result's rows as ``result/<model>/<split>/<metric>`` at their step, its status as a tag."""
        from mlflow.entities import Metric, RunTag

        now = _millis()
        metrics = [Metric(metric_key("result", r["model"], r["split"], r["metric"]), float(r["value"]), now,
                          int(r["step"] or 0)) for r in result.metrics if r.get("value") is not None]
        tags = [RunTag("gapkit.status", result.status)] + (
            [RunTag("gapkit.reason", result.reason)] if result.reason else [])
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self._status = "FAILED" if result.status == "failed" else "FINISHED"

    def close(self) -> None:
        """End the MLflow run: FINISHED or FAILED once a result is written, KILLED for an interrupted run."""
        self.client.set_terminated(self.run_id, status=self._status)


def check_tracker(kind: str) -> None:
    """Refuse ``train.tracking`` whose package is missing, before the run builds or writes anything.

    Raises:
        ConfigError: one sentence naming the extra to install.
    """
    if kind == "mlflow":
        try:
            import mlflow.tracking  # noqa: F401
        except ImportError:
            raise ConfigError(MISSING) from None


def open_tracker(kind: str, folder, config: dict, name: str, gapkit_run_id: str, resume: bool):
    """The tracker ``train.tracking`` asks for, or None for ``off``."""
    if kind == "off":
        return None
    if kind == "mlflow":
        return MlflowTracker(folder, config, name, gapkit_run_id, resume)
    raise ConfigError(f"Unknown train.tracking {kind!r}.")  # TrainSpec refuses it first


def _millis() -> int:
    import time

    return int(time.time() * 1000)
