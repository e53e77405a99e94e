"""The bot answers Slack as soon as a listener acks, while the listener goes on after it."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import Ack, BoltRequest
from slack_bolt.listener import thread_runner
from slack_sdk.signature import SignatureVerifier

from bot.app import AckWaitingExecutor, build_app
from registry.adapters.queue import TASK_APPROVE
from registry.rules.settings import Settings
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import SLACK_SIGNING_SECRET, TOKEN, click_payload, wait_for

SLOW_ACTION = "test-slow-ack"


class RecordingCelery:
    """Stands for the Celery app behind the bot's Producer: records what it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, *, kwargs: dict, retry: bool, headers: dict) -> None:
        self.sent.append((name, kwargs))


@pytest.fixture
def executor():
    pool = AckWaitingExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def test_a_listener_handed_over_returns_once_it_acked_and_runs_on(executor):
    ack, release = executor.expect_ack(), threading.Event()

    def listener() -> None:
        ack()
        release.wait(10)

    future = executor.submit(listener)
    assert ack.response is not None and ack.response.status == 200
    assert not future.done()  # the listener's own work goes on after the answer
    release.set()
    future.result(10)


def test_a_listener_that_ends_without_acking_returns_too(executor):
    ack = executor.expect_ack()
    future = executor.submit(lambda: None)
    assert future.done() and ack.response is None


def test_a_submit_no_request_expects_does_not_wait(executor):
    release = threading.Event()
    future = executor.submit(release.wait, 10)  # as Bolt starts a lazy listener
    assert not future.done()
    release.set()
    assert future.result(10) is True


@pytest.fixture
def bot(redis_url, slack):
    """The Bolt app as the bot builds it, with one extra listener that acks late."""
    settings = Settings(
        mlflow_tracking_uri="http://mlflow.invalid",
        redis_url=f"{redis_url}/15",
        slack_bot_token=TOKEN,
        slack_signing_secret=SLACK_SIGNING_SECRET,
        slack_api_url=slack.api_url,
        slack_channel="CNOTICES",
        approvers=("UAPPROVER1",),
    )
    celery = RecordingCelery()
    app = build_app(settings, celery=celery)
    gate = threading.Event()

    def acks_late(ack: Ack) -> None:
        gate.wait(5)
        ack()

    app.action(SLOW_ACTION)(acks_late)
    return app, celery, gate


def signed(payload: dict) -> BoltRequest:
    body = urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()))
    signature = SignatureVerifier(SLACK_SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
    headers = {
        "content-type": ["application/x-www-form-urlencoded"],
        "x-slack-request-timestamp": [ts],
        "x-slack-signature": [signature or ""],
    }
    return BoltRequest(body=body, headers=headers)


@pytest.fixture
def polls(monkeypatch) -> list[float]:
    """Record each time Bolt's listener runner sleeps waiting for an ack."""
    slept: list[float] = []
    monkeypatch.setattr(thread_runner, "time", SimpleNamespace(time=time.time, sleep=slept.append))
    return slept


def test_a_late_ack_is_answered_without_bolt_polling_for_it(bot, slack, polls):
    app, _, gate = bot
    payload, _ = click_payload(slack, user="UAPPROVER1", action_id=SLOW_ACTION, value="x")
    threading.Timer(0.05, gate.set).start()  # the listener acks after the request waits
    response = app.dispatch(signed(payload))
    assert response.status == 200
    assert polls == []


def test_an_approve_click_is_answered_then_queued_by_the_listener(bot, slack, polls):
    app, celery, _ = bot
    value = button_value("churn", "3")
    payload, url = click_payload(slack, user="UAPPROVER1", action_id=APPROVE_ACTION, value=value)
    assert app.dispatch(signed(payload)).status == 200
    wait_for(lambda: celery.sent, "the approval to be queued")
    [(task, kwargs)] = celery.sent
    assert task == TASK_APPROVE and kwargs["user"] == "UAPPROVER1"
    assert (kwargs["model_name"], kwargs["version"], kwargs["response_url"]) == ("churn", "3", url)
    assert polls == []


def test_a_bad_signature_is_still_refused(bot, slack):
    app, celery, _ = bot
    payload, _ = click_payload(slack, user="UAPPROVER1", action_id=APPROVE_ACTION, value="x")
    request = signed(payload)
    request.headers["x-slack-signature"] = ["v0=" + "0" * 64]
    assert app.dispatch(request).status == 401
    assert celery.sent == []
