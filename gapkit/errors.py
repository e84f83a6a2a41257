"""gapkit's exceptions: one base class, one subclass per concern.

Each subclass also derives from the built-in exception a caller would naturally catch
(``ValueError`` for bad input), so code that knows nothing about gapkit still handles it.
"""


class GapkitError(Exception):
    """Base class of every error gapkit raises on purpose."""


class DataError(GapkitError, ValueError):
    """Bad or missing data: unknown task, missing file or split, malformed row, bad length."""


class ConfigError(GapkitError, ValueError):
    """A run, sweep or student configuration that cannot be built."""


class ModelError(GapkitError, ValueError):
    """A model that cannot be found or loaded: unknown name, missing folder, wrong layout or shapes."""


class TrainingFailed(GapkitError, RuntimeError):
    """A run stopped on purpose (a NaN/inf loss, ...); its run folder holds a failure record."""
