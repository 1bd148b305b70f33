"""The version of turnpike, defined once (setup.cfg reads it from here)."""
__version__ = "0.1.0"
