"""Outbound lifecycle events to signed HTTP sinks (the events themselves: registry.record)."""

from __future__ import annotations

import requests

from registry.changes import LifecycleEvent
from registry.events import signed_headers


def deliver(url: str, secret: str, event: LifecycleEvent, *, timeout: float = 5.0) -> None:
    """POST one event to one sink; raise on any answer but 2xx."""
    resp = requests.post(
        url,
        data=event.body().encode(),
        headers=signed_headers(secret, event.event_id, event.body()),
        timeout=timeout,
    )
    resp.raise_for_status()
