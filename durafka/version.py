"""The durafka version, importable without the package's top level (no import cycle)."""

__version__ = "0.1.0"
