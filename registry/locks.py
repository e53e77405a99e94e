"""Per-model locks in Redis, so concurrent events and clicks never race on one model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

LOCK_TIMEOUT = 120.0  # seconds a holder may keep the lock before Redis frees it (a crash)
LOCK_WAIT = 30.0


class LockBusy(RuntimeError):
    """Another worker holds the model's lock for longer than we wait."""


@contextmanager
def model_lock(
    client: redis.Redis, model_name: str, *, timeout: float = LOCK_TIMEOUT, wait: float = LOCK_WAIT
) -> Iterator[None]:
    """Hold the model's write lock; raise LockBusy if it is not free within `wait` seconds."""
    lock = client.lock(f"registry-bot:lock:{model_name}", timeout=timeout, blocking_timeout=wait)
    if not lock.acquire():
        raise LockBusy(f"lock for model {model_name} is busy")
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # it expired while held; the timeout already handed it on
