"""The ``turnpike`` command line (the library itself prints nothing and parses no arguments)."""
from ._main import main

__all__ = ["main"]
