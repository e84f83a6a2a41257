"""Teacher logits on disk: computed once per (teacher, examples), read by every later run.

Task KD from logits alone (stage ``task``, soft labels on, relation and hidden-state terms off) never
needs the teacher again once it has its logits on the training set: the teacher is frozen and in eval
mode, so they cannot change. :meth:`TeacherSide.cache_logits
<gapkit.distill.teacher_side.TeacherSide.cache_logits>` computes them in one pass, and a
:class:`LogitStore` keeps that pass in a safetensors file, so the other seeds and students of a sweep
(in other processes, other units of work, later invocations) read it instead of loading the teacher.

**What a live run computes is what the file holds.** A live run's logits come from one pass over the
training set in file order, in chunks of ``train.eval_batch_size`` examples padded to the chunk's
longest (never from the shuffled training batches, whose padding would change the last bits). The file
stores exactly those float32 tensors, one per example, indexed by the example's position in the training
set; every batch size, shuffle and seed reads its rows by index. So a student trained on the file is
bitwise the student trained on a live pass (``tests/test_teacher_cache.py``).

**The key** is a hash of everything the bits of that pass depend on (:meth:`LogitStore.for_run`):

- the teacher: the SHA-256 of its ``config.json`` and of each weight file (``*.safetensors``, ``*.bin``,
  ``*.pt``, ``*.pth``, ``*.h5``, ``*.msgpack``, ``*.index.json``) of its folder: content, not names or
  dates, so a retrained teacher in the same folder never matches its predecessor's file;
- the head loaded on it (sequence/token) and its label count;
- the examples: input ids, attention masks and token types of every training example, in order, and
  ``data.max_len`` and the padding id;
- the pass: the chunk size (``train.eval_batch_size``), ``train.compile`` and its bucket lengths;
- the arithmetic: device (CPU instruction set and thread count, or the GPU's name), bf16 autocast on
  CUDA, and the torch and transformers versions.

Only teachers given as local folders are cached (every teacher a sweep builds is one: a fine-tuned run's
``best/``); a Hub name is computed live (its files are not pinned to a revision here).

**Where.** ``$GAPKIT_TEACHER_CACHE`` when set (a folder, or ``off``), else ``<gapkit cache>/teacher_outputs``
(``$GAPKIT_CACHE``, default ``~/.cache/gapkit``, the folder that also holds gapkit's token caches): one
folder shared by every sweep and run of the machine. A file is ``<first 32 hex digits of the key>.safetensors``
with the full key in its metadata, written atomically (:func:`gapkit.io.atomic_write`) under an exclusive
lock (``.lock`` beside it), so concurrent runs of one key compute it once.

**Refusals.** A file whose key or shapes do not match what the run expects is not used: a warning names it
and the run computes afresh (and replaces it). A file that cannot be read as safetensors is a
:class:`~gapkit.errors.ConfigError` naming it.

**Not cached.** Hidden states and Q/K/V. A live run computes them per training batch, padded to that
batch's length, so a per-example file would change the bits of a live run rather than reproduce them; and
they do not fit: the last layer alone of bert-base on SST-2's 67,000 sentences is about 5 GB (the logits
are 0.5 MB). Runs with a relation or hidden-state term load their teacher as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError
from ..io import atomic_write, save_safetensors

__all__ = ["LogitStore", "cache_folder", "teacher_fingerprint", "examples_digest", "FORMAT"]

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the file layout or the key's meaning changes
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_META_KEY, _META_FACTS = "gapkit_teacher_cache", "teacher_facts"
_digests: dict[tuple, str] = {}  # a file's SHA-256 by (path, size, inode, mtime, ctime): hashed once a process


def cache_folder(choice: str | os.PathLike | bool | None = None) -> Path | None:
    """The folder of teacher-output files, or None when caching is off.

    Args:
        choice: a folder; False for off; None for ``$GAPKIT_TEACHER_CACHE`` (a folder, or ``off``), else
            ``<gapkit cache>/teacher_outputs``.
    """
    if choice is False:
        return None
    if choice is None or choice is True:
        env = os.environ.get("GAPKIT_TEACHER_CACHE")
        if env and env.strip().lower() in ("off", "0", "false", "no"):
            return None
        if env:
            return Path(env).expanduser()
        from ..data.text import cache_root

        return cache_root() / "teacher_outputs"
    return Path(choice).expanduser()


def _file_digest(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def teacher_fingerprint(ref: str | os.PathLike) -> dict[str, str] | None:
    """File name -> SHA-256 of the teacher folder's config and weight files; None for a teacher that is
    not a local folder (a Hub name), or a folder without ``config.json``."""
    folder = Path(str(ref)).expanduser()
    if not (folder / "config.json").is_file():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES or p.name.endswith(".index.json")))
    return {p.name: _file_digest(p) for p in files}


def examples_digest(features) -> str:
    """SHA-256 of the model inputs of ``features`` in order: input ids, attention mask, token types."""
    h = hashlib.sha256()
    for i in range(len(features)):
        f = features[i]
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            values = f.get(name)
            a = np.asarray(values if values is not None else [], dtype=np.int64)
            h.update(f"{name}:{a.size};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _arithmetic(device: torch.device, bf16: bool) -> dict:
    """What decides the last bits of a forward pass besides its inputs: device, precision, libraries."""
    import transformers

    if device.type == "cuda":
        where = dict(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                     autocast="bf16" if bf16 else "fp32")
    else:  # CPU kernels differ by instruction set, and reductions by thread count
        where = dict(device=device.type, cpu=torch.backends.cpu.get_cpu_capability(),
                     threads=torch.get_num_threads(), autocast="fp32")
    return dict(where, torch=torch.__version__, transformers=transformers.__version__)


class LogitStore:
    """The file of one teacher's logits on one training set.

    Args:
        folder: the cache folder (:func:`cache_folder`).
        key: what the logits are a function of (:meth:`for_run`); JSON-able.
    Attributes:
        path: the file; ``digest``: the key's SHA-256.
        source: after :meth:`TeacherSide.cache_logits`, where this run's logits came from: ``cache``
            (this file, or the same tensors already read by a run sharing the teacher side) or
            ``teacher`` (computed, then written here).
    """

    def __init__(self, folder: str | os.PathLike, key: dict):
        self.folder, self.key = Path(folder), key
        self._key_json = json.dumps(key, sort_keys=True)
        self.digest = hashlib.sha256(self._key_json.encode()).hexdigest()
        self.path = self.folder / f"{self.digest[:32]}.safetensors"
        self.source: str | None = None

    @classmethod
    def for_run(cls, spec, task, device: torch.device, folder: Path | None) -> "LogitStore | None":
        """The store of a task-KD run's training-set logits; None when caching is off or the teacher
        is not a local folder (logged)."""
        if folder is None:
            return None
        teacher = teacher_fingerprint(spec.teacher)
        if teacher is None:
            logger.info("Teacher %s is not a local model folder: its logits are computed, not cached.", spec.teacher)
            return None
        train = spec.train
        from .compiling import bucket_lengths

        key = dict(format=FORMAT, outputs="logits", teacher=teacher, head=task.head, num_labels=task.num_labels,
                   examples=examples_digest(task.train), count=len(task.train), max_len=spec.data.max_len,
                   pad_token_id=task.pad_token_id, batch_size=train.eval_batch_size, compile=train.compile,
                   buckets=list(bucket_lengths(spec.data.max_len, train.compile_buckets)) if train.compile != "off"
                   else None, **_arithmetic(device, train.bf16))
        return cls(folder, key)

    # -- reading -------------------------------------------------------------------------------------
    def _open(self):
        """The file's (metadata, tensors); None when there is none.

        Raises:
            ConfigError: the file is not a readable safetensors file.
        """
        from safetensors import safe_open

        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.metadata() or {}, {name: f.get_tensor(name) for name in f.keys()}
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types, and OSError
            raise ConfigError(f"The teacher-output cache file {self.path} is corrupt ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:120]}): delete it and run again (or set "
                              f"GAPKIT_TEACHER_CACHE=off).") from None

    def _mismatch(self, meta: dict, tensors: dict, features) -> str | None:
        """Why the file is not this key's logits of ``features`` (None: it is)."""
        if meta.get(_META_KEY) != self._key_json:
            return "it was written for another teacher, data or device (its key differs)"
        logits, lengths = tensors.get("logits"), tensors.get("lengths")
        n = len(features)
        if logits is None or logits.dtype != torch.float32 or logits.dim() != 2:
            return "it holds no (rows, labels) float32 'logits' tensor"
        if logits.shape[1] != self.key["num_labels"]:
            return f"its logits have {logits.shape[1]} labels, not {self.key['num_labels']}"
        if lengths is None:
            return None if logits.shape[0] == n else f"it holds {logits.shape[0]} examples, not {n}"
        want = torch.tensor([len(features[i]["input_ids"]) for i in range(n)], dtype=torch.int64)
        if lengths.shape != want.shape or not torch.equal(lengths, want) or int(lengths.sum()) != logits.shape[0]:
            return "its per-example token counts differ from the examples'"
        return None

    def facts(self) -> dict | None:
        """The teacher's facts recorded with a usable file (``max_positions``, ``vocab_size``,
        ``params``): what a run checks without loading the teacher. None when there is no usable file."""
        if not self.path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # noqa: BLE001 - read() names a corrupt file
            return None
        return json.loads(meta[_META_FACTS]) if meta.get(_META_KEY) == self._key_json and _META_FACTS in meta else None

    def read(self, features) -> list[torch.Tensor] | None:
        """The logits of every example of ``features``, (C,) or (T_i, C) each; None when there is no file
        or it does not match (a warning names it and why).

        Raises:
            ConfigError: the file is corrupt.
        """
        opened = self._open()
        if opened is None:
            return None
        meta, tensors = opened
        why = self._mismatch(meta, tensors, features)
        if why is not None:
            logger.warning("Teacher-output cache file %s is not used: %s; the teacher's logits are computed "
                           "again and replace it.", self.path, why)
            return None
        logits = tensors["logits"]
        if "lengths" not in tensors:
            return list(logits.unbind(0))
        return list(logits.split(tensors["lengths"].tolist()))

    # -- writing -------------------------------------------------------------------------------------
    def write(self, logits: list[torch.Tensor], facts: dict) -> Path:
        """Write ``logits`` (one float32 tensor per example, as :meth:`read` returns them) and the
        teacher's ``facts``, atomically."""
        if logits[0].dim() == 1:
            tensors = {"logits": torch.stack(logits).contiguous()}
        else:  # token task: (T_i, C) per example, concatenated with each example's T_i
            tensors = {"logits": torch.cat(logits).contiguous(),
                       "lengths": torch.tensor([x.shape[0] for x in logits], dtype=torch.int64)}
        meta = {_META_KEY: self._key_json, _META_FACTS: json.dumps(facts, sort_keys=True)}
        self.folder.mkdir(parents=True, exist_ok=True)
        return atomic_write(self.path, lambda tmp: save_safetensors(tensors, tmp, meta))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the key's lock: one process computes and writes it while the others wait, then read."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def record(self) -> dict:
        """What result.json says of the run's teacher logits."""
        return dict(source=self.source, path=str(self.path), key=self.digest)
