"""gapkit's version, in a module of its own so that any module can name it without importing the package
root (``gapkit/__init__.py`` imports nearly everything; a module that imported it back would make a cycle)."""

__version__ = "0.1.0"
