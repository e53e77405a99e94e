"""Per-model locks on real Redis: held while the holder works, however long, and then free."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from registry.locks import LockBusy, model_lock


@pytest.fixture
def client(redis_url) -> redis.Redis:
    return redis.Redis.from_url(f"{redis_url}/9")


def test_a_lock_is_kept_past_its_ttl_while_the_holder_works(client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    with model_lock(client, name, ttl=1.0):
        time.sleep(2.5)  # more than twice the TTL: only renewals keep it
        with pytest.raises(LockBusy), model_lock(client, name, ttl=1.0, wait=0.2):
            pass
    with model_lock(client, name, ttl=1.0, wait=0.2):
        pass  # released at the end of the block, not left to lapse


def test_a_lock_whose_holder_stopped_renewing_lapses_within_its_ttl(client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    held = client.lock(f"registry-bot:lock:{name}", timeout=1.0)  # a holder that then died
    assert held.acquire(blocking=False)
    started = time.monotonic()
    with model_lock(client, name, ttl=1.0, wait=3.0):
        assert time.monotonic() - started < 2.0
