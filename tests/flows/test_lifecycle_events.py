"""Lifecycle events: one per change, on Redis and to signed sinks, retried, never blocking."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import pytest
import redis
from standardwebhooks.webhooks import Webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from registry.rules.record import LIFECYCLE_CHANNEL as CHANNEL
from registry.rules.record import LifecycleEvent, event_for
from tests.support import SERVICES, approve_click, stage, stage_of, updates_of, wait_for

SINK_SECRET = "whsec_" + base64.b64encode(b"sink-secret-for-lifecycle-events!").decode()


class Sink:
    """A lifecycle event receiver that records deliveries and can fail the first few."""

    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.received: list[tuple[float, int, dict, bytes]] = []
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @Request.application
    def app(self, request: Request) -> Response:
        with self.lock:
            status = 500 if len(self.received) < self.fail_first else 204
            self.received.append((time.time(), status, dict(request.headers), request.get_data()))
        return Response(status=status)

    def delivered(self) -> list[dict]:
        """Return the events answered 2xx, verified with the standardwebhooks library."""
        with self.lock:
            ok = [(h, b) for _, status, h, b in self.received if status == 204]
        return [Webhook(SINK_SECRET).verify(b, {k.lower(): v for k, v in h.items()}) for h, b in ok]

    def close(self) -> None:
        self.server.shutdown()


def test_event_payload_and_id_are_stable():
    entry = {"at": "2023-11-14T22:13:20.500Z", "actor": "UA", "reason": "r"}
    entry["previous_version"] = "1"
    event = event_for("promoted", "churn", "2", entry, at=1700000000.5)
    assert event == LifecycleEvent("promoted", "churn", "2", "1", "UA", "r", 1700000000.5)
    assert json.loads(event.body())["type"] == "promoted"
    assert json.loads(event.body())["at"] == 1700000000.5  # a number, as before
    assert event.event_id == event_for("promoted", "churn", "2", entry, at=1700000000.5).event_id
    assert event_for("approval", "churn", "2", entry, at=1.0).type == "approval_counted"


def test_a_recorded_change_publishes_its_logged_time_as_a_number():
    from registry.flows.recording import record
    from registry.ports.services import Services
    from registry.rules.record import history_of, parse_time
    from registry.rules.settings import Settings
    from tests.fakes import FakeDirectory, FakeGateway, RecordingNotifier

    gateway, published = FakeGateway(), []
    mv = gateway.register("churn", "run1", "model", "", {})
    svc = Services(
        gateway=gateway,
        notifier=RecordingNotifier(),
        settings=Settings(mlflow_tracking_uri="fake", slack_channel="C"),
        directory=FakeDirectory(["UA"]),
        clock=lambda: 1700000000.1234,
        emit=published.append,
    )

    record(svc, mv, "staged", actor="UA")

    [entry] = history_of(gateway.get_version("churn", "1"))
    assert entry["at"] == "2023-11-14T22:13:20.123Z"
    [event] = published
    assert event.at == parse_time(entry["at"]) == 1700000000.123


@pytest.mark.slow
def test_each_change_is_published_once_and_signed_and_a_failing_sink_is_retried(
    stacks, slack, mlflow_server, model_name
):
    sink = Sink(fail_first=2)
    try:
        stack = stacks.get(
            services=SERVICES, EVENT_SINK_URLS=sink.url, EVENT_SINK_SECRET=SINK_SECRET
        )
        pubsub = redis.Redis.from_url(stack.redis_url).pubsub()
        pubsub.subscribe(CHANNEL)
        v1, ts1 = stage(stack, slack, mlflow_server, model_name)
        approve_click(stack, slack, model_name, v1, "UAPPROVER1", ts1)
        wait_for(lambda: updates_of(slack, ts1), "notice update")
        assert stage_of(mlflow_server, model_name, v1) == "Production"

        delivered = wait_for(
            lambda: (lambda d: d if len(d) >= 2 else None)(sink.delivered()),
            "two deliveries",
            timeout=30,
        )
        time.sleep(1.0)
        mine = [e for e in sink.delivered() if e["model_name"] == model_name]
        assert sorted(e["type"] for e in mine) == ["promoted", "staged"]
        assert all(
            set(e) == {"type", "model_name", "version", "previous_version", "actor", "reason", "at"}
            for e in delivered
        )
        assert len([r for r in sink.received if r[1] == 500]) == 2

        # The failing sink did not hold up Slack: every request it had, failed or not, was
        # made by a delivery task of its own, never by the task that staged or approved.
        def delivery_runs() -> list[str]:
            done = r"Task registry_bot\.deliver_event\[[^]]+\] (?:succeeded in|retry: )"
            return re.findall(done, stack.log("worker"))

        wait_for(lambda: len(delivery_runs()) >= 4, "the delivery tasks' last lines")
        assert len(delivery_runs()) == len(sink.received) == 4
        # Each failed delivery was retried with backoff (1 s, then 2 s).
        attempts: dict[str, list[tuple[float, int]]] = {}
        for at, status, headers, _ in sink.received:
            attempts.setdefault(headers.get("Webhook-Id", ""), []).append((at, status))
        retried = [a for a in attempts.values() if any(status == 500 for _, status in a)]
        assert retried
        for tries in retried:
            last_failure = max(at for at, status in tries if status == 500)
            assert min(at for at, status in tries if status == 204) - last_failure >= 0.9

        published = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(published) < 2:
            message = pubsub.get_message(timeout=0.5)
            # Pub/sub channels span every Redis database: keep this model's events only.
            event = json.loads(message["data"]) if message and message["type"] == "message" else {}
            if event.get("model_name") == model_name:
                published.append(event)
        assert [e["type"] for e in published] == ["staged", "promoted"]
        assert published[1]["actor"] == "UAPPROVER1"
    finally:
        sink.close()
