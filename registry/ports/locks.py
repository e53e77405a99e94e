"""What a per-model lock says to the code that holds it: busy, or lost."""

from __future__ import annotations


class LockBusy(RuntimeError):
    """Another worker holds the model's lock for longer than we wait."""


class LockLost(RuntimeError):
    """The model's lock is, or may by now be, another worker's: write nothing more."""
