"""Per-model locks in Redis, so concurrent events and clicks never race on one model."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from redis.lock import Lock

from registry.ports.locks import LockBusy, LockLost

# A holder renews its lock every LOCK_TTL/3 seconds; if the holder is killed, the lock
# lapses within LOCK_TTL, so a redelivered task waits seconds, not minutes.
LOCK_TTL = 15.0


LOCK_WAIT = 30.0


# Fractions of the TTL. A renewal that failed (Redis unreachable) is tried again soon,
# so one blip costs nothing. A holder whose last renewal is older than FRESH_FOR counts
# its lock as lost: that tolerates one late or failed renewal, and leaves a third of the
# TTL (5 s) for its last write to land before Redis could let the key expire.
RENEW_EVERY = 1 / 3


RETRY_EVERY = 1 / 15


FRESH_FOR = 2 / 3


ACQUIRE_POLL = 0.1  # seconds between tries for a busy lock, as redis-py's own loop


class HeldLock:
    """A model lock its holder took: says whether it is still surely the holder's."""

    def __init__(self, name: str, ttl: float, renewed_at: float, clock: Callable[[], float]):
        self.name, self.ttl, self.clock = name, ttl, clock
        self.renewed_at = renewed_at  # when the last (re)acquire that went through was sent
        self.why = ""  # why it counts as lost; once set, it stays

    @property
    def lost(self) -> bool:
        """Say whether the lock is, or may be, someone else's now."""
        # The keeper stalls with a stalled process, so the age is checked here too.
        if not self.why and self.clock() - self.renewed_at > self.ttl * FRESH_FOR:
            self.why = f"not renewed for over {self.ttl * FRESH_FOR:g}s"
        return bool(self.why)

    def check(self) -> None:
        """Raise LockLost if the lock is, or may be, someone else's now."""
        if self.lost:
            raise LockLost(f"lock for model {self.name} lost: {self.why}")

    def renewed(self, sent_at: float) -> None:
        """Note a renewal that went through, sent at `sent_at`."""
        self.renewed_at = sent_at

    def lose(self, why: str) -> None:
        """Count the lock as lost, for `why`."""
        self.why = self.why or why


@contextmanager
def model_lock(
    client: redis.Redis,
    model_name: str,
    *,
    ttl: float = LOCK_TTL,
    wait: float = LOCK_WAIT,
    clock: Callable[[], float] = time.monotonic,
    prefix: str = "",
) -> Iterator[HeldLock]:
    """Hold the model's write lock (under the deployment's REDIS_KEY_PREFIX, `prefix`); raise
    LockBusy if it is not free within `wait` seconds."""
    # Not thread-local: the keeper thread renews it, and redis-py keeps a thread-local
    # lock's token where only the acquiring thread can see it.
    lock = client.lock(f"{prefix}registry-bot:lock:{model_name}", timeout=ttl, thread_local=False)
    taken_at = _acquire(lock, wait, clock)
    if taken_at is None:
        raise LockBusy(f"lock for model {model_name} is busy")
    held = HeldLock(model_name, ttl, taken_at, clock)
    done = threading.Event()
    keeper = threading.Thread(target=_keep_alive, args=(lock, held, done), daemon=True)
    keeper.start()
    try:
        yield held
    finally:
        done.set()
        keeper.join()
        # It may have lapsed (Redis unreachable for a whole TTL): nothing to release then.
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _acquire(lock: Lock, wait: float, clock: Callable[[], float]) -> float | None:
    """Take the lock within `wait` seconds; return when the try that took it was sent."""
    # Timed from the send, not the answer: the key's expiry is at least that plus the TTL.
    deadline = time.monotonic() + wait
    while True:
        sent = clock()
        if lock.acquire(blocking=False):
            return sent
        if time.monotonic() >= deadline:
            return None
        time.sleep(ACQUIRE_POLL)


def _keep_alive(lock: Lock, held: HeldLock, done: threading.Event) -> None:
    """Renew the lock while its holder works; count it lost once it may be someone else's."""
    pause = held.ttl * RENEW_EVERY
    while not done.wait(pause):
        sent = held.clock()
        try:
            lock.reacquire()
        except redis.exceptions.LockError:  # the key is gone or another holder's
            held.lose("no longer its owner")
            return
        except redis.RedisError:
            if held.lost:  # unrenewed for so long that it may have lapsed
                return
            pause = held.ttl * RETRY_EVERY
            continue
        held.renewed(sent)
        pause = held.ttl * RENEW_EVERY
