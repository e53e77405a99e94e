"""Per-model locks in Redis, so concurrent events and clicks never race on one model."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

# A holder renews its lock every LOCK_TTL/3 seconds; if the holder is killed, the lock
# lapses within LOCK_TTL, so a redelivered task waits seconds, not minutes.
LOCK_TTL = 15.0
LOCK_WAIT = 30.0


class LockBusy(RuntimeError):
    """Another worker holds the model's lock for longer than we wait."""


@contextmanager
def model_lock(
    client: redis.Redis, model_name: str, *, ttl: float = LOCK_TTL, wait: float = LOCK_WAIT
) -> Iterator[None]:
    """Hold the model's write lock; raise LockBusy if it is not free within `wait` seconds."""
    # Not thread-local: the keeper thread renews it, and redis-py keeps a thread-local
    # lock's token where only the acquiring thread can see it.
    lock = client.lock(
        f"registry-bot:lock:{model_name}", timeout=ttl, blocking_timeout=wait, thread_local=False
    )
    if not lock.acquire():
        raise LockBusy(f"lock for model {model_name} is busy")
    done = threading.Event()
    keeper = threading.Thread(target=_keep_alive, args=(lock, ttl, done), daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()
        # It may have lapsed (Redis unreachable for a whole TTL): nothing to release then.
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _keep_alive(lock, ttl: float, done: threading.Event) -> None:
    """Renew the lock while its holder works."""
    while not done.wait(ttl / 3):
        try:
            lock.reacquire()
        except (redis.exceptions.LockError, redis.RedisError):
            return
