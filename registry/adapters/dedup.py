"""Slack's redeliveries: remember each event id, so an event runs once across every bot copy."""

from __future__ import annotations

import logging

import redis

from registry.rules.settings import Settings

log = logging.getLogger(__name__)

# Slack redelivers a missed event up to three times, the last about five minutes on.
DEDUP_TTL = 3600


def seen_key(kind: str, event_id: str, prefix: str = "") -> str:
    """Return the key that marks an inbound event of `kind` as queued (webhooks door), under
    the deployment's REDIS_KEY_PREFIX."""
    return f"{prefix}registry-bot:seen:{kind}:{event_id}"


def forget_event(client: redis.Redis, event_id: str, prefix: str = "") -> None:
    """Let a training event's resend through: its task was given up, nothing was done."""
    try:
        client.delete(seen_key("training", event_id, prefix))
    except redis.RedisError as exc:  # the mark lapses on its own, in a week
        log.warning("could not forget event: %s", exc, extra={"event_id": event_id})


class DeliveryLedger:
    """Which Slack events this deployment already took, kept in Redis for an hour."""

    def __init__(self, settings: Settings, *, ttl: int = DEDUP_TTL):
        self.ttl = ttl
        self.prefix = settings.redis_key("registry-bot:slack-event:")
        # Short timeouts: the bot must still acknowledge within Slack's 3 s.
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1.0
        )

    def first_delivery(self, event_id: str) -> bool:
        """Say whether this is the first time any bot copy sees `event_id`."""
        try:
            return bool(self.redis.set(f"{self.prefix}{event_id}", "1", nx=True, ex=self.ttl))
        except redis.RedisError as exc:
            # Without Redis nothing can be queued either, so the event cannot run twice.
            log.warning("dedup unavailable: %s", exc, extra={"event_id": event_id})
            return True
