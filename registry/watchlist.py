"""Which models are under guard, and which alerts have a plan, kept in Redis for the webhooks door.

The door may not read the registry, yet it must answer Alertmanager how many alerts it
took in hand (SPEC 12). The worker publishes each model's guard entry here when its
Production changes, with the guard window as the key's lifetime, and rebuilds them all
from the registry now and then, so a lost Redis is whole again within minutes. The
worker decides every alert again from the registry, under the model's lock: an entry
here only lets the door know which alerts to queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict

import redis

from registry.changes import LifecycleEvent
from registry.events import ModelAlert
from registry.guard import PRODUCTION_CHANGES, Watched, alert_key, watch_after, watch_entry
from registry.locks import LockBusy
from registry.policy import Policy
from registry.services import Services

log = logging.getLogger(__name__)

WATCH_KEY = "registry-bot:guarded:{model}"
ALERT_KEY = "registry-bot:alert:{key}"
REBUILT_KEY = "registry-bot:guarded:rebuilt"
ALERT_TTL = 30 * 86400  # longer than any alert stays firing before it resolves
REBUILD_EVERY = 300  # seconds between rebuilds from the registry
CLOCK_SKEW = 60.0  # seconds the worker's clock and the registry's may disagree by


def publish(client: redis.Redis, model: str, entry: Watched | None, now: float) -> None:
    """Put the model under guard until `entry.until`, or take it off when there is no entry."""
    key = WATCH_KEY.format(model=model)
    if entry is None or entry.until <= now:
        client.delete(key)
        return
    client.set(key, json.dumps(asdict(entry)), px=max(1, int((entry.until - now) * 1000)))


def watched(client: redis.Redis, model: str, now: float) -> Watched | None:
    """Return the model's guard entry, or None when it is not under guard."""
    raw = client.get(WATCH_KEY.format(model=model))
    if raw is None:
        return None
    try:
        entry = Watched(**json.loads(raw))
    except (TypeError, ValueError):
        return None
    return entry if entry.until > now else None


def concerns(client: redis.Redis, alert: ModelAlert, now: float) -> bool:
    """Say whether the door should queue this alert: a guarded Production, or a known plan."""
    if alert.status == "resolved":
        return bool(
            client.exists(ALERT_KEY.format(key=alert_key(alert.fingerprint, alert.starts_at)))
        )
    entry = watched(client, alert.model_name, now)
    return entry is not None and (not alert.version or alert.version == entry.version)


def remember_alert(client: redis.Redis, key: str, model: str) -> None:
    """Note that alert `key` got a plan or a rollback, so its resolution reaches the worker."""
    try:
        client.set(ALERT_KEY.format(key=key), model, ex=ALERT_TTL)
    except redis.RedisError as exc:  # only its thread note is at stake
        log.warning("could not note alert %s: %s", key, exc, extra={"model": model})


def follow(client: redis.Redis, event: LifecycleEvent, policy: Policy) -> None:
    """Update the model's guard entry after a lifecycle change that moved Production."""
    if event.type not in PRODUCTION_CHANGES:
        return
    entry = watch_after(event, policy.for_model(event.model_name).guard)
    publish(client, event.model_name, entry, event.at)


def rebuild(
    client: redis.Redis,
    svc: Services,
    lock: Callable[[str], AbstractContextManager],
    *,
    force: bool = False,
) -> int:
    """Rebuild the guard entries from the registry, at most every REBUILD_EVERY s.

    Only a model whose Production changed within its guard window can have an entry, and
    such a change moves the model's update time: the models updated since the longest
    window began (with a minute for clocks that disagree) are read, newest first, so the
    cost follows recent changes, not the registry's size (in aliases mode, where alias
    writes leave that time alone, every model is read).
    """
    if not (force or client.set(REBUILT_KEY, "1", nx=True, ex=REBUILD_EVERY)):
        return 0
    guarded = 0
    since = svc.clock() - longest_guard_window(svc.settings.policy) - CLOCK_SKEW
    for name in (m.name for m in svc.gateway.models_updated_since(max(0, int(since * 1000)))):
        try:
            with lock(name):
                guard = svc.settings.policy.for_model(name).guard
                entry = watch_entry(name, svc.gateway.versions(name), guard, svc.clock())
                publish(client, name, entry, svc.clock())
        except LockBusy:
            continue  # the next rebuild sees it
        guarded += entry is not None
    return guarded


def longest_guard_window(policy: Policy) -> float:
    """Return the longest guard window any model's policy sets, in seconds."""
    return max(p.guard.window for p in (policy.defaults, *policy.models.values()))
