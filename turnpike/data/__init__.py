"""Data sets: generated two spirals (more loaders follow the same pattern)."""
from ._spirals import two_spirals

__all__ = ["two_spirals"]
