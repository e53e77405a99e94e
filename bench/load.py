"""Load generation: signed training events and Slack clicks, open and closed loops."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode

import requests

from bench.stack import CHANNEL, SIGNING_SECRET, TEAM, TRAINING_SECRET
from registry.rules.events import signed_headers as sign

Request = tuple[str, bytes, dict[str, str]]  # url, body, headers
_local = threading.local()


@dataclass
class Samples:
    """Answer times (seconds) of one load run, with statuses and the achieved rate."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    lag_max: float = 0.0  # how far behind schedule the open loop fell

    def add(self, seconds: float, status: int) -> None:
        """Record one answer."""
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def extend(self, other: Samples) -> None:
        """Add another run's answers to these."""
        self.latencies.extend(other.latencies)
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.elapsed += other.elapsed
        self.lag_max = max(self.lag_max, other.lag_max)

    @property
    def rate(self) -> float:
        """Return answers per second over the run."""
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def in_turn(names: list[str], i: int) -> list[str]:
    """Return `names` rotated by `i`, so that each takes its turn going first."""
    k = i % len(names)
    return names[k:] + names[:k]


def signed_headers(body: bytes, *, secret: str = TRAINING_SECRET) -> dict[str, str]:
    """Return Standard Webhooks headers for `body`, with a fresh webhook-id."""
    return sign(secret, f"msg_{uuid.uuid4().hex}", body.decode())


def training_request(base_url: str, model_name: str, run_id: str) -> Request:
    """Build a signed training event for one run."""
    body = json.dumps({"model_name": model_name, "run_id": run_id, "requested_by": "UREQUESTER"})
    return f"{base_url}/hooks/training", body.encode(), signed_headers(body.encode())


def front_door_request(base_url: str) -> Request:
    """Build a valid, freshly signed training event for a run that need not exist."""
    return training_request(base_url, "bench-front-door", uuid.uuid4().hex)


def click_request(
    bot_url: str, user: str, model_name: str, version: str, *, slack_url: str
) -> Request:
    """Build a signed block_actions Approve click, as Slack sends it."""
    body = urlencode({"payload": json.dumps(_click(user, model_name, version, slack_url))})
    return f"{bot_url}/slack/events", body.encode(), slack_headers(body)


def slack_headers(body: str) -> dict[str, str]:
    """Return the headers Slack signs a request with."""
    from devkit.slack_requests import signed_headers

    return signed_headers(body, SIGNING_SECRET)


def _click(user: str, model_name: str, version: str, slack_url: str) -> dict:
    """Return a block_actions payload: `user` pressed Approve on a version's notice."""
    from registry.views.notice import APPROVE_ACTION, button_value

    action = {
        "type": "button",
        "action_id": APPROVE_ACTION,
        "block_id": "decision",
        "value": button_value(model_name, version),
        "action_ts": f"{time.time():.6f}",
    }
    return {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "bench"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "ABENCH",
        "token": "legacy-verification-token",
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.abc",
        "container": {"type": "message", "message_ts": "1.0", "channel_id": CHANNEL},
        "channel": {"id": CHANNEL, "name": "models"},
        "message": {"type": "message", "ts": "1.0", "text": ""},
        "response_url": f"{slack_url}response/bench-{uuid.uuid4().hex[:8]}",
        "actions": [action],
    }


def post(req: Request) -> tuple[float, int]:
    """POST one prepared request on this thread's session; return (seconds, status)."""
    session = getattr(_local, "session", None) or requests.Session()
    _local.session = session
    url, body, headers = req
    started = time.perf_counter()
    try:
        status = session.post(url, data=body, headers=headers, timeout=10).status_code
    except requests.RequestException:
        status = 0
    return time.perf_counter() - started, status


def open_loop(
    make: Callable[[], Request], rate: float, seconds: float, threads: int = 32
) -> Samples:
    """Send `rate` requests a second for `seconds`, on schedule whatever the answers take."""
    samples, lock = Samples(), threading.Lock()

    def send() -> None:
        took, status = post(make())
        with lock:
            samples.add(took, status)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for i in range(int(rate * seconds)):
            due = started + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            samples.lag_max = max(samples.lag_max, time.perf_counter() - due)
            pool.submit(send)
    samples.elapsed = time.perf_counter() - started
    return samples


def closed_loop(make: Callable[[], Request], threads: int, seconds: float) -> Samples:
    """Keep `threads` clients posting back to back for `seconds`."""
    samples, lock = Samples(), threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            took, status = post(make())
            with lock:
                samples.add(took, status)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(client)
    samples.elapsed = time.perf_counter() - started
    return samples


def together(requests_: list[Request]) -> Samples:
    """Send prepared requests all at once, one thread each, released by a barrier."""
    samples, lock = Samples(), threading.Lock()
    barrier = threading.Barrier(len(requests_))

    def send(req: Request) -> None:
        barrier.wait()
        took, status = post(req)
        with lock:
            samples.add(took, status)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(requests_)) as pool:
        list(pool.map(send, requests_))
    samples.elapsed = time.perf_counter() - started
    return samples
