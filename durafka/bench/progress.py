"""How a running benchmark reports its progress."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NoProgress", "Progress"]


class Progress(Protocol):
    """Receives progress while a benchmark runs (e.g. a progress bar)."""

    def begin(self, label: str, total: int) -> None:
        """A phase of ``total`` steps starts."""

    def advance(self, steps: int = 1) -> None:
        """``steps`` more steps of the current phase are done."""

    def end(self) -> None:
        """The current phase is over."""


class NoProgress:
    """A :class:`Progress` that shows nothing (the importable API's default)."""

    def begin(self, label: str, total: int) -> None:
        """Ignore."""

    def advance(self, steps: int = 1) -> None:
        """Ignore."""

    def end(self) -> None:
        """Ignore."""
