"""Slack's per-channel pace: a burst of training events, every notice posted exactly once."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from tests.support import FIGURES, log_model

pytestmark = pytest.mark.slow

CHANNEL = "CBURST"
BURST = 50
PER_SECOND = 1.0  # about what Slack allows chat.postMessage in one channel
DEADLINE = 240.0  # far above the ~50 s the pace itself takes: a stuck worker fails, not hangs


def test_a_burst_of_50_events_for_one_channel_posts_each_notice_once(stacks, slack, mlflow_server):
    stack = stacks.get(SLACK_CHANNEL=CHANNEL)
    run_id = log_model(mlflow_server, constant=1.0)
    prefix = f"burst-{uuid.uuid4().hex[:6]}"
    models = [f"{prefix}-{i:02d}" for i in range(BURST)]
    slack.set_pace(CHANNEL, PER_SECOND)
    try:
        started = time.monotonic()
        for name in models:
            assert stack.post_training({"model_name": name, "run_id": run_id}).status_code == 202
        slack.wait_for(
            "chat.postMessage",
            lambda c: c.status == 200 and _model_of(c, prefix) is not None,
            timeout=DEADLINE,
            count=BURST,
        )
        took = time.monotonic() - started
        # Each notice's evidence follows in its thread, after the notices: it waits while
        # Slack answers the channel's posts with 429, and is not lost for waiting.
        slack.wait_for(
            "chat.postMessage",
            lambda c: c.status == 200 and _evidence_of(c, prefix) is not None,
            timeout=DEADLINE,
            count=BURST,
        )
        evidence_took = time.monotonic() - started
        time.sleep(3.0)  # a duplicate would be a retried task posting once more
    finally:
        slack.set_pace(CHANNEL, None)

    posts = [c for c in slack.calls("chat.postMessage") if _model_of(c, prefix) is not None]
    posted = Counter(_model_of(c, prefix) for c in posts if c.status == 200)
    assert posted == Counter(models)  # all 50, none twice
    shown = [m["text"].split(" v")[0] for m in slack.messages(CHANNEL)]
    assert Counter(name for name in shown if name.startswith(prefix)) == Counter(models)
    limited = [c for c in posts if c.status == 429]
    assert limited  # the pace was really enforced, and the worker wait_for it out
    assert all(c.response == {"ok": False, "error": "ratelimited"} for c in limited)
    accepted = sorted(c.at for c in posts if c.status == 200)
    assert min(b - a for a, b in zip(accepted, accepted[1:], strict=False)) >= 0.99 / PER_SECOND
    replies = [c for c in slack.calls("chat.postMessage") if c.status == 200]
    evidence = Counter(_evidence_of(c, prefix) for c in replies) - Counter({None: len(replies)})
    assert evidence == Counter(models)  # one evidence reply a notice, none lost, none twice
    last_notice = accepted[-1]
    early = [c for c in replies if _evidence_of(c, prefix) and c.at < last_notice]
    # Only evidence that found the channel quiet for a moment (the burst's first seconds,
    # before any notice was answered 429) may go before a notice.
    assert len(early) <= 5, len(early)
    FIGURES.append(
        f"Burst: {BURST} training events for one channel -> {BURST} notices, none twice, in "
        f"{took:.1f} s at {PER_SECOND:g} message/s ({len(limited)} posts answered 429); "
        f"their evidence in {evidence_took:.1f} s, {len(early)} of it before the last notice"
    )
    assert took < DEADLINE


def _model_of(call, prefix: str) -> str | None:
    """Return the model a notice post is for, or None for any other post."""
    text = str(call.params.get("text", ""))
    if call.params.get("channel") != CHANNEL or call.params.get("thread_ts"):
        return None
    return text.split(" v")[0] if text.startswith(prefix) else None


def _evidence_of(call, prefix: str) -> str | None:
    """Return the model an evidence reply in a notice's thread is for, or None."""
    text = str(call.params.get("text", ""))
    if call.params.get("channel") != CHANNEL or not call.params.get("thread_ts"):
        return None
    if not text.startswith(f"*Evidence for {prefix}"):
        return None
    return text.removeprefix("*Evidence for ").split(" v")[0]
