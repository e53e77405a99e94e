"""Per-model locks on real Redis: held while the holder works, however long, and then free;
a holder that may have lost its lock writes nothing more."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager

import pytest
import redis

from registry.adapters.locks import model_lock
from registry.flows.sweep import sweep
from registry.ports.fencing import Fence, FencedGateway, fenced
from registry.ports.locks import LockBusy, LockLost
from tests.fakes import FakeGateway
from tests.support import Clock, fake_services, wait_for


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


def writes(gateway, name: str) -> dict:
    """Return each write of the RegistryGateway Protocol, as a call on `gateway`."""
    return {
        "register": lambda: gateway.register(name, "run-2", "model", "", {}),
        "move": lambda: gateway.move(name, "1", "Production"),
        "set_tags": lambda: gateway.set_tags(name, "1", {"registry_bot.x": "2"}),
        "delete_tags": lambda: gateway.delete_tags(name, "1", ["registry_bot.x"]),
    }


def test_a_holder_whose_lock_was_taken_away_writes_nothing_more(client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    inner = FakeGateway()
    with model_lock(client, name, ttl=1.5) as held:
        fenced = FencedGateway(inner, held.check)
        fenced.register(name, "run-1", "model", "", {"registry_bot.x": "1"})  # held: it writes
        client.delete(f"registry-bot:lock:{name}")  # as a failover or a lapse would
        wait_for(lambda: held.lost, "the keeper to find the lock gone", timeout=1.5)
        before = inner.versions(name)
        for op, write in writes(fenced, name).items():
            with pytest.raises(LockLost):
                write()
            assert inner.versions(name) == before, f"{op} reached the registry"
        assert fenced.versions(name) == before  # reads still pass
    # Gone under it: the holder's exit releases nothing and raises nothing.
    with model_lock(client, name, ttl=1.5, wait=0.2):
        pass


def test_a_holder_stalled_past_the_margin_counts_its_lock_lost_before_its_keeper_runs(client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    clock = Clock(0.0)
    # TTL 15 s: the keeper first renews 5 s from now, long after this test is done.
    with model_lock(client, name, clock=clock) as held:
        held.check()
        clock.advance(9.9)  # a stall shorter than the margin (2/3 of the TTL)
        held.check()
        clock.advance(0.2)  # past it: Redis may have let the key expire meanwhile
        assert held.lost
        with pytest.raises(LockLost, match=name):
            held.check()


def test_a_holder_whose_renewals_hang_counts_its_lock_lost(client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    with model_lock(client, name, ttl=3.0) as held:
        taken = time.monotonic()
        # Redis takes no write for 3 s (a failover, say): the renewal due at 1 s hangs.
        client.client_pause(3000, all=False)
        assert not held.lost
        wait_for(lambda: held.lost, "the unrenewed lock to count as lost", timeout=3.0)
        assert time.monotonic() - taken < 3.0  # while the renewal still hangs
        time.sleep(1.5)  # Redis is back and the renewal goes through: lost stays lost
        assert held.lost


def test_a_long_holder_whose_keeper_renews_is_never_counted_lost(client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    with model_lock(client, name, ttl=3.0) as held:
        deadline = time.monotonic() + 7.0  # more than twice the TTL
        while time.monotonic() < deadline:
            held.check()
            time.sleep(0.05)
        assert not held.lost


class Lapsing:
    """A held lock that is lost at once (its key deleted, a stall past its lifetime)."""

    def check(self) -> None:
        raise LockLost("lock for model lapsed lost: key gone")


class Steady:
    """A held lock that stays held."""

    def check(self) -> None:
        pass


def test_the_sweep_stops_writing_a_model_whose_lock_it_lost_and_sweeps_the_next():
    svc = fake_services()
    for model in ("lapsed", "steady"):  # each staged by hand: a notice to post
        svc.gateway.register_elsewhere(model, f"run-{model}")
        svc.gateway.move(model, "1", "Staging")

    @contextmanager
    def lock(name: str):
        yield Lapsing() if name == "lapsed" else Steady()

    fence = Fence(lock)
    report = sweep(fenced(svc, fence.check), fence, ["lapsed", "steady"])
    assert report.done == {"noticed": [("steady", "1")]}
    assert svc.gateway.get_version("lapsed", "1").tags == {}  # not one write after the loss
    assert [text for text, _ in svc.notifier.posts] == [
        "steady v1 is in Staging and needs approval"
    ]
    assert fence.held is None  # between models, nothing is held and nothing is checked
    fence.check()
