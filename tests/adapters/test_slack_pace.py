"""Slack's per-channel pace, noted where every worker process sees it: a 429 on a post marks
the channel busy for its Retry-After and a few seconds more, so the evidence waits there and
the notices queued in a burst go first (SPEC 15: the notice never waits for its evidence)."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from slack_sdk import WebClient
from slack_sdk.http_retry.request import HttpRequest

from devkit.slack_double import SlackDouble
from devkit.stack import free_port
from registry.adapters.slack import ChannelPace, SlackNotifier, _top_level_channel, retry_handlers

TOKEN = "xoxb-pace"


@pytest.fixture
def double():
    with SlackDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def pace(redis_url) -> ChannelPace:
    return ChannelPace.at(redis_url, f"pace-{uuid.uuid4().hex[:8]}:")


def test_a_429_on_a_post_marks_its_channel_busy_for_every_process(double, pace, redis_url):
    client = WebClient(token=TOKEN, base_url=double.api_url, retry_handlers=retry_handlers(pace))
    notifier = SlackNotifier(client, "CBUSY", pace)
    double.set_pace("CBUSY", 2.0)
    notifier.post("first", [])
    assert not notifier.busy("CBUSY")
    notifier.post("second, too soon", [])  # answered 429, slept on, then taken
    statuses = [c.status for c in double.calls("chat.postMessage")]
    assert statuses == [200, 429, 200]
    # Another process's view of the same Redis says so; another channel is not busy.
    elsewhere = ChannelPace.at(redis_url, pace.prefix)
    assert elsewhere.busy("CBUSY") and not elsewhere.busy("CQUIET")
    ttl = redis.Redis.from_url(redis_url).ttl(f"{pace.prefix}registry-bot:slack-pace:CBUSY")
    assert 1 < ttl <= 1 + ChannelPace.QUIET  # Retry-After 1, then a few quiet seconds


def test_a_429_on_a_thread_reply_leaves_the_channel_free(double, pace):
    client = WebClient(token=TOKEN, base_url=double.api_url, retry_handlers=retry_handlers(pace))
    notifier = SlackNotifier(client, "CTHREAD", pace)
    ts = notifier.post("notice", [])
    double.set_pace("CTHREAD", 2.0)
    notifier.reply("CTHREAD", ts, "first")
    notifier.reply("CTHREAD", ts, "second, too soon")  # the evidence among its own kind
    assert [c.status for c in double.calls("chat.postMessage")] == [200, 200, 429, 200]
    assert not notifier.busy("CTHREAD")


def test_without_a_pace_the_notifier_is_never_busy(double):
    client = WebClient(token=TOKEN, base_url=double.api_url, retry_handlers=retry_handlers())
    double.set_pace("CBUSY", 2.0)
    notifier = SlackNotifier(client, "CBUSY")
    notifier.post("first", [])
    notifier.post("second", [])
    assert [c.status for c in double.calls("chat.postMessage")] == [200, 429, 200]
    assert not notifier.busy("CBUSY")  # the bot's own client, say: nothing noted, nothing read


def test_only_a_top_level_post_names_its_channel_busy():
    def request(method: str, data: bytes) -> HttpRequest:
        url = f"https://slack.test/api/{method}"
        return HttpRequest(method="POST", url=url, headers={}, data=data)

    def post(**params: str) -> HttpRequest:
        return request("chat.postMessage", json.dumps({"text": "x", **params}).encode())

    assert _top_level_channel(post(channel="C1")) == "C1"
    assert _top_level_channel(post(channel="C1", thread_ts="1.0")) == ""  # evidence, notes
    assert _top_level_channel(request("chat.postMessage", b"channel=C3&text=x")) == "C3"
    shared = b"files=%5B%5D&channel_id=C2&thread_ts=1.0"
    assert _top_level_channel(request("files.completeUploadExternal", shared)) == ""
    assert _top_level_channel(request("chat.postMessage", b"{not json")) == ""
    assert _top_level_channel(request("chat.postMessage", b"")) == ""


def test_redis_failing_to_say_is_not_busy_and_noting_never_raises():
    pace = ChannelPace.at(f"redis://127.0.0.1:{free_port()}", "gone:")
    pace.note("C1", 1.0)
    assert not pace.busy("C1")


def test_evidence_waiting_for_a_busy_channel_is_retried_and_not_counted_as_failing():
    from types import SimpleNamespace

    from registry.adapters.queue import TASK_EVIDENCE
    from registry.ports.evidence import ChannelBusy
    from worker.tasks import _failed, metrics

    failures = metrics().task_failures
    task = SimpleNamespace(name=TASK_EVIDENCE)

    def counted() -> float:
        return sum(
            s.value
            for m in failures.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.labels["task"] == TASK_EVIDENCE
        )

    before = counted()
    assert _failed(task, ChannelBusy("CBUSY"), {}) is True  # tried again
    assert counted() == before
    assert _failed(task, KeyError("notice_ts"), {}) is False  # a real failure still counts
    assert counted() == before + 1
