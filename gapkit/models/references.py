"""Whether a model reference (a local folder or a Hugging Face Hub repo id) can name a model, without torch:
configs check their teacher and student references when they are read."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["missing_reference", "reads_as_path"]


def missing_reference(ref: str | os.PathLike, role: str = "Model") -> str | None:
    """Why ``ref`` names no model a loader could find, before the Hub is asked; None when it may load.

    A reference is a local folder or a Hugging Face Hub repo id (``bert-base-uncased``, ``org/name``).
    Handed to transformers or huggingface_hub, a folder that does not exist is tried as a repo id, and the
    user reads a message about repo ids or the network instead of a missing folder. So a reference that
    reads as a path (it starts with ``.``, ``/`` or ``~``, holds more than one ``/``, holds the system's
    separator, or cannot be a repo id) and does not exist is refused here, as is a file where a folder is
    meant, and a folder without a ``config.json``.

    Args:
        ref: the reference as the user gave it.
        role: how the sentence names it (``teacher``, ``Student``, ``Model``).
    Returns:
        One sentence (no final period) naming the reference and how to fix it, or None.
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
        return (f"{role} folder {text!r} has no config.json (it holds {found}): give the folder that "
                f"save_pretrained wrote (config.json and weights)")
    if path.exists():
        kind = "a safetensors weight file" if path.suffix == ".safetensors" else "a file"
        return (f"{role} {text!r} is {kind}, not a model folder: give the folder that holds it with its "
                f"config.json")
    if not reads_as_path(text):
        return None  # a Hub repo id: only the Hub can say whether it exists
    parent = next((p for p in path.parents if p.is_dir()), None)
    where = f" (the nearest existing folder is {parent})" if parent is not None and str(parent) != "." else ""
    return (f"{role} {text!r}: no such folder{where}; give an existing model folder or a Hugging Face Hub name "
            f"such as bert-base-uncased")


def reads_as_path(text: str) -> bool:
    """Whether a reference that does not exist reads as a local path rather than a Hub repo id."""
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text):
        return True
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False
