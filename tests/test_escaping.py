"""Text from people and pipelines reaches Slack inert: no live mention, broadcast or link."""

from __future__ import annotations

import re
from contextlib import nullcontext

import pytest

from registry.flows import canary, lifecycle, operations
from registry.flows.sweep import sweep
from registry.rules.commands import Command, CommandError, parse_command
from registry.rules.events import TrainingEvent
from registry.rules.reports import plan_rollback
from registry.rules.text import escape, mention
from tests.support import Clock, local_services, log_model, mention_event, slash, wait_for

LIVE = ("<!channel>", "<!here>", "<@UEVIL0001>", "<https://evil.example|x>")
HOSTILE = " ".join(LIVE) + " & co"
INERT = "&lt;!channel&gt; &lt;!here&gt; &lt;@UEVIL0001&gt; &lt;https://evil.example|x&gt; &amp; co"
POLICY = """
defaults:
  gates:
    - metric: "<!here>"
      min: 0.5
"""
CANARY = """
defaults:
  canary:
    duration: 1s
    require_report: true
"""


def texts(value) -> list[str]:
    """Every text Slack renders: each `text` at any depth (a button's value is not shown)."""
    if isinstance(value, dict):
        return [
            t
            for key, item in value.items()
            for t in ([item] if key == "text" and isinstance(item, str) else texts(item))
        ]
    if isinstance(value, list):
        return [t for item in value for t in texts(item)]
    return []


def rendered(slack, since: int) -> list[tuple[str, str]]:
    """(method, text) for every text the double received since call number `since`."""
    return [(call.method, text) for call in slack.calls()[since:] for text in texts(call.params)]


def test_escape_neutralises_the_three_control_characters():
    assert escape(HOSTILE) == INERT
    assert escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert mention("UAPPROVER1") == "<@UAPPROVER1>"
    assert mention("<!channel>@evil.example") == "&lt;!channel&gt;@evil.example"


@pytest.mark.parametrize("text", ["<!channel>", "status <@UEVIL0001>", "history <!here> 3"])
def test_command_errors_echo_the_input_inert(text):
    with pytest.raises(CommandError) as raised:
        parse_command(text)
    assert not any(token in str(raised.value) for token in LIVE)
    assert "&lt;" in str(raised.value)


@pytest.mark.slow
def test_no_path_posts_outside_text_live(slack, mlflow_server, model_name):
    """Each posting path gets the hostile text; the double must hold it only escaped."""
    since = len(slack.calls())
    clock = Clock()
    svc = local_services(mlflow_server, slack, clock=clock, policy=POLICY)
    url = slack.response_url

    def event(constant: float) -> str:
        # MLflow refuses such a metric name on a run; an event may carry it.
        run_id = log_model(mlflow_server, constant=constant, git_commit="<!here>")
        training = TrainingEvent(
            model_name,
            run_id,
            requested_by="<!channel>@evil.example",
            metrics={"<!here>": 0.9, "accuracy": 0.9},
            description=f"{HOSTILE} (description)",
        )
        return lifecycle.stage_training_event(svc, training, event_id=f"e{constant}").version

    # The notice (description, requester, metric names, code version, gate lines) and the
    # promotion's thread reply.
    v1 = event(1.0)
    assert lifecycle.approve(svc, model_name, v1, user="UAPPROVER1") == "promoted"
    clock.advance(1)
    v2 = event(2.0)
    assert lifecycle.approve(svc, model_name, v2, user="UAPPROVER1") == "promoted"
    clock.advance(1)
    # A rejection's reason: the redrawn notice, its thread, history.
    v3 = event(3.0)
    reason = f"{HOSTILE} (reject)"
    assert lifecycle.reject(svc, model_name, v3, user="UAPPROVER2", reason=reason) == "rejected"
    clock.advance(1)
    # A rollback's reason: the plan, the channel announcement, history, status.
    why = f"{HOSTILE} (rollback)"
    cmd = Command("rollback", model_name, version=v1, reason=why)
    operations.answer_command(
        svc, cmd, user="UAPPROVER2", channel="CNOTICES", response_url=url("plan")
    )
    plan = plan_rollback(svc.gateway.versions(model_name), model_name, v1, why)
    operations.rollback(svc, plan, user="UAPPROVER2", channel="CNOTICES", response_url=url("done"))
    for verb in ("history", "status"):
        operations.answer_command(
            svc,
            Command(verb, model_name),
            user="UOUTSIDER",
            channel="CNOTICES",
            response_url=url(verb),
        )

    # A canary's failing detail: the redrawn notice and its thread.
    canary_model = f"{model_name}-canary"
    held = local_services(mlflow_server, slack, clock=clock, policy=CANARY)
    run_id = log_model(mlflow_server, constant=4.0)
    staged = lifecycle.stage_training_event(
        held, TrainingEvent(canary_model, run_id, description="canary run"), event_id="c1"
    )
    assert lifecycle.approve(held, canary_model, staged.version, user="UAPPROVER1") == (
        "canary_started"
    )
    detail = f"{HOSTILE} (canary)"
    failed = canary.canary_verdict(
        held, canary_model, staged.version, passed=False, detail=detail, metrics={}, event_id="c"
    )
    assert failed == "rejected"
    sweep(held, lambda name: nullcontext(), [canary_model])

    posted = rendered(slack, since)
    live = [(method, text) for method, text in posted if any(t in text for t in LIVE)]
    assert live == []
    for marker, method in (
        ("(description)", "chat.postMessage"),  # the notice
        ("(reject)", "chat.update"),  # the decided notice
        ("(rollback)", "response_url"),  # the plan
        ("(rollback)", "chat.postMessage"),  # the announcement
        ("(canary)", "chat.update"),
    ):
        assert any(m == method and INERT in t and marker in t for m, t in posted), (marker, method)
    history = [t for m, t in posted if m == "response_url" and "last " in t]
    assert any(f"{INERT} (reject)" in t and f"{INERT} (rollback)" in t for t in history)
    assert any("&lt;!channel&gt;@evil.example" in t for m, t in posted if m == "chat.postMessage")
    # A metric name in the table (issue 18's aligned columns: the name, then its value).
    assert any(re.search(r"&lt;!here&gt;\s+0\.9", t) for m, t in posted)
    status = [t for m, t in posted if m == "response_url" and "Production: v" in t]
    assert status and "&lt;!here&gt; 0.9" in status[-1]


@pytest.mark.slow
def test_the_bot_echoes_command_arguments_inert(stacks, slack):
    bot = stacks.get(services=("worker", "webhooks", "bot"))
    since = len(slack.calls())
    for text in ("<!channel>", "status <@UEVIL0001>", "history <!here> 2"):
        resp, _ = slash(bot.bot_url, slack, text, user="UOUTSIDER")
        assert resp.status_code == 200
    assert mention_event(bot.bot_url, "<!channel>", user="UOUTSIDER").status_code == 200
    answers = wait_for(
        lambda: (lambda found: found if len(found) >= 4 else None)(
            [
                (m, t)
                for m, t in rendered(slack, since)
                if m in ("response_url", "chat.postEphemeral")
            ]
        ),
        "four answers",
        timeout=30,
    )
    assert [t for _, t in answers if any(token in t for token in LIVE)] == []
    assert all("&lt;" in t for _, t in answers)
