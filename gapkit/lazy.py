"""Lazy re-exports: a package names its public objects without importing the modules that define them.

``gapkit --version``, ``--help``, ``status``, ``results`` and config errors need none of torch,
transformers or the models, so the packages' ``__init__`` modules must not import them: each declares
which submodule defines each public name, and the submodule is imported on first use of the name
(PEP 562 module ``__getattr__``). ``from gapkit import Student`` and ``gapkit.Student`` work as before.

A public name that is also a submodule's name (``gapkit.sweep.plan``, ``gapkit.analysis.report``) must be
imported eagerly by its package: importing the submodule would otherwise bind the module to that name.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable, list[str]]:
    """The ``__getattr__``, ``__dir__`` and ``__all__`` of a package whose public names live in submodules.

    Args:
        package: the package's ``__name__``.
        table: submodule (relative, ``".trainer"``) -> the public names it defines.
    Returns:
        (``__getattr__``, ``__dir__``, the names in ``table`` in order), for the package to bind.
    """
    where = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups find it without this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, list(where)
