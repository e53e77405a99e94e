"""Hostile text through every message builder and every posting path: nothing stays live.

Outside text (model names from the registry, a version's tags, which anyone with MLflow
access can edit, descriptions, reasons, alert labels and annotations, run facts) must reach
Slack only through `registry.rules.text.escape`. Hypothesis feeds strings built from Slack's
control sequences to each builder, then to the workflows over the in-memory fakes, and
every mrkdwn text (and every message's top-level `text`, which notifications show) is
checked: no `<!…>`, and no mention, channel or link but those registry-bot makes itself.
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from urllib.parse import quote, urlsplit

from hypothesis import example, given, settings
from hypothesis import strategies as st

from registry.flows import alerts, lifecycle, operations, protection
from registry.flows import notice as home_tab
from registry.flows.freeze import approval_text
from registry.flows.notice import canary_line, frozen_line, notice_facts
from registry.flows.sweep import sweep
from registry.rules.commands import Command
from registry.rules.decisions import Clicker, judge_approval, judge_rejection, settled_message
from registry.rules.events import ModelAlert
from registry.rules.governance import freeze_line
from registry.rules.policy import Freeze
from registry.rules.reports import (
    Outcome,
    RollbackPlan,
    RollbackRefused,
    history_text,
    plan_rollback,
    standing,
    status_text,
)
from registry.rules.text import escape
from registry.rules.versions import ModelVersion
from registry.views.alerts import (
    OutOfBandFacts,
    alert_plan,
    alert_text,
    closed_plan,
    out_of_band_alert,
    resolved_alert,
    resolved_note,
)
from registry.views.announcements import (
    canary_overdue_note,
    rollback_abandoned,
    rollback_announcement,
)
from registry.views.home import ModelRule, home_view
from registry.views.modals import accept_modal, reject_modal, rollback_modal
from registry.views.notice import NoticeFacts, decided_notice, staging_notice
from registry.views.plans import plan_blocks
from tests.support import Ticking, fake_services

# Each carries EVIL, so a live one is told apart from the mentions and links registry-bot
# makes itself (approvers' IDs, the model's channel, the MLflow UI, an alert's source).
CONTROL = (
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<!subteam^SEVIL01>",
    "<@UEVIL01>",
    "<#CEVIL01>",
    "<https://evil.example/x|click>",
    "<mailto:evil@evil.example|mail>",
    "<",
    ">",
    "&",
    "|",
    "&lt;",
    "\n>",
)
hostile = st.lists(st.one_of(st.sampled_from(CONTROL), st.text(max_size=6)), max_size=5).map(
    "".join
)
KNOWN = "<@UEVIL01> and <!channel> & <https://evil.example/x|click>"
TOKEN = re.compile(r"<([^<>]*)>")
MENTION = re.compile(r"[@#][UWCG][A-Z0-9]+")  # a recorded user ID, a configured channel
LINK = re.compile(r"(https?://[^\s|<>]+)(\|[^<>]*)?")  # to MLflow, or an alert's source
USERS = ("UA", "UB", "UREQ")
NOW = 1_800_000_000.0


def live(text: str) -> list[str]:
    """Return what Slack would read as a control sequence that registry-bot did not make."""
    found = ["<!"] if "<!" in text else []
    for token in TOKEN.finditer(text):
        inner, link = token.group(1), LINK.fullmatch(token.group(1))
        if MENTION.fullmatch(inner) and "EVIL" not in inner:
            continue
        if link and "evil" not in (urlsplit(link.group(1)).hostname or "evil"):
            continue
        found.append(token.group(0))
    return found


def mrkdwn(value) -> list[str]:
    """Every text Slack parses: mrkdwn objects and top-level message texts, at any depth."""
    if isinstance(value, dict):
        found = [value["text"]] if value.get("type") == "mrkdwn" else []
        return found + [t for item in value.values() for t in mrkdwn(item)]
    if isinstance(value, list):
        return [t for item in value for t in mrkdwn(item)]
    return []


def assert_inert(*rendered) -> None:
    """Each argument is a message text, a (text, blocks) pair, blocks, or a view."""
    texts: list[str] = []
    for item in rendered:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, tuple):
            texts += [item[0], *mrkdwn(item[1])]
        else:
            texts += mrkdwn(item)
    bad = [(text, live(text)) for text in texts if live(text)]
    assert bad == [], bad


def mv(name: str, version: str, stage: str, **tags: str) -> ModelVersion:
    return ModelVersion(
        name, version, stage, tags={f"registry_bot.{k}": v for k, v in tags.items()}
    )


def log(*entries: dict) -> str:
    return json.dumps(list(entries))


# -- each pure builder ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@example(text=KNOWN)
@given(text=hostile)
def test_the_notice_and_its_decided_form_keep_outside_text_inert(text):
    facts = NoticeFacts(
        model_name=text,
        version="3",
        run_id=text,
        run_url="http://mlflow.example/#/experiments/0/runs/r",
        version_url=f"http://mlflow.example/#/models/{quote(text, safe='')}/versions/3",
        requested_by=text,
        requester=text,
        git_commit=text,
        description=text,
        metrics={text: 0.5, "auc": 0.9},
        production_version="2",
        production_metrics={text: 0.4},
        approvals=(text, "UA"),
        required_approvals=2,
    )
    assert_inert(staging_notice(facts))
    decided = mv(
        text,
        "3",
        "Archived",
        decision="rejected",
        decided_by=f"{text},UA",
        reason=text,
        log=log(
            {
                "type": "archived",
                "at": "2026-01-01T00:00:00Z",
                "actor": text,
                "via": "rollback",
                "replaced_by": text,
                "reason": text,
            }
        ),
    )
    facts = NoticeFacts(model_name=text, version="3", standing=standing(decided))
    assert_inert(decided_notice(facts, Outcome("Rejected", [text, "UA"], NOW, reason=text)))
    assert_inert(settled_message(decided), frozen_line(decided), canary_line(decided))


@settings(max_examples=60, deadline=None)
@example(text=KNOWN)
@example(text="U")  # was rendered <@U>, a mention of no one registry-bot recorded (found here)
@given(text=hostile)
def test_announcements_alerts_and_modals_keep_outside_text_inert(text):
    assert_inert(
        rollback_announcement(text, "2", "1", text, text),
        rollback_abandoned(text, "1", text, "3"),
        canary_overdue_note(text, "3", NOW, NOW + 60),
        out_of_band_alert(OutOfBandFacts(text, "k", ("2",), "1")),
        out_of_band_alert(OutOfBandFacts(text, "k", (), "")),
        resolved_alert(OutOfBandFacts(text, "k", ("2",), "1"), escape(text)),
        reject_modal(text, "3", channel="C1", message_ts="1.0")["blocks"],
        accept_modal(text, "k", channel="C1", message_ts="1.0")["blocks"],
    )


@settings(max_examples=60, deadline=None)
@example(text=KNOWN)
@given(text=hostile)
def test_reports_and_plans_keep_outside_text_inert(text):
    entry = {"type": text, "at": "2026-01-01T00:00:00Z", "actor": text, "reason": text}
    versions = [
        mv(
            text,
            "2",
            "Production",
            decided_by=text,
            metrics=json.dumps({text: 1.0}),
            production_since="2026-01-01T00:00:00Z",
            log=log({**entry, "previous_version": text}),
        ),
        mv(
            text,
            "1",
            "Archived",
            decided_by=text,
            decision="approved",
            production_since="2025-01-01T00:00:00Z",
            production_until="2026-01-01T00:00:00Z",
            log=log(entry),
        ),
        mv(text, "3", "Staging", approvals=text, metrics=json.dumps({text: 1.0})),
    ]
    plan = RollbackPlan(text, "2", "1", text, target_approved_by=text)
    assert_inert(
        status_text(text, versions, 2),
        history_text(text, versions, 10),
        plan_blocks(plan),
        rollback_modal(plan, channel="C1", response_url="")["blocks"],
    )
    for version in ("", "1", "9"):
        try:
            assert_inert(plan_blocks(plan_rollback(versions, text, version, text)))
        except RollbackRefused as refused:
            assert_inert(str(refused))
    assert_inert(str(_refusal(lambda: plan_rollback([], text))))
    clicker = Clicker("UOUT")
    for verdict in (
        judge_approval(versions[2], clicker, required=1),
        judge_rejection(versions[0], clicker),
    ):
        assert_inert(verdict.message)


@settings(max_examples=60, deadline=None)
@example(text=KNOWN)
@given(text=hostile)
def test_the_guards_plans_and_notes_keep_outside_text_inert(text):
    alert = ModelAlert(
        text,
        "firing",
        "f",
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00Z",
        text,
        text,
        text,
        f"http://prometheus.example/{text}",
        text,
    )
    plan = RollbackPlan(text, "2", "1", text, alert="key")
    assert_inert(alert_text(alert, "2"), alert_plan(plan, alert), resolved_note(alert))
    assert_inert(closed_plan(alert_plan(plan, alert)[1], escape(text)))
    assert_inert(freeze_line([Freeze("0 16 * * FRI", 3600.0, "UTC", text)], NOW))


@settings(max_examples=40, deadline=None)
@example(text=KNOWN)
@given(text=hostile)
def test_the_home_tab_keeps_outside_text_inert(text):
    versions = [
        mv(
            text, "3", "Staging", requested_by=text, approvals=text, metrics=json.dumps({text: 1.0})
        ),
        mv(
            text,
            "2",
            "Production",
            decided_by=text,
            rolled_back_by=text,
            log=log({"type": text, "at": "2026-01-01T00:00:00Z", "actor": text, "reason": text}),
        ),
    ]
    rule = ModelRule(Clicker("UA", is_approver=True), required=2)
    assert_inert(home_view(versions, rules={text: rule}, now=NOW))


@settings(max_examples=30, deadline=None)
@example(text=KNOWN)
@given(text=hostile)
def test_what_an_approval_says_keeps_outside_text_inert(text):
    svc = fake_services(approvers=USERS)
    waiting = mv(
        text,
        "3",
        "Staging",
        freeze_state="waiting",
        freeze_until_text=text,
        freeze_reason=text,
        approvals="UA",
    )
    assert_inert(
        approval_text(svc, waiting), approval_text(svc, mv(text, "3", "Staging", approvals="UA"))
    )


def _refusal(plan) -> RollbackRefused:
    try:
        plan()
    except RollbackRefused as refused:
        return refused
    raise AssertionError("no refusal")


# -- the workflows, over the fakes: every post, update, reply and answer ---------------------


def said(svc) -> list:
    notifier = svc.notifier
    return [
        *[text for text, _ in notifier.posts],
        *notifier.blocks,
        *[text for _, text in notifier.updates],
        *notifier.update_blocks,
        *[text for _, text in notifier.replies],
        *[text for _, text in notifier.told],
        *notifier.homes.values(),
    ]


@settings(max_examples=25, deadline=None)
@example(text=KNOWN)
@example(text="a model")  # a space in the MLflow link's target broke the link (found here)
@given(text=hostile)
def test_every_workflow_keeps_a_hostile_registry_inert(text):
    """A model named by hostile text in the registry, hostile tags, hostile reasons."""
    name = text or "-"
    svc = fake_services(
        approvers=USERS,
        clock=Ticking(NOW),
        policy="defaults:\n  protect_production: alert\n",
        mlflow_ui_url="http://mlflow.example",
    )
    gw, lock = svc.gateway, (lambda _: nullcontext())
    gw.register_elsewhere(name, "r1")
    lifecycle.stage_version(svc, name, "1", event_id="e1")  # a notice for the hostile name
    hostile_tags = {"registry_bot.description": text, "registry_bot.requested_by": text}
    gw.set_tags(name, "1", {**hostile_tags, "registry_bot.metrics": json.dumps({text: 0.5})})
    lifecycle.approve(svc, name, "1", user="UA")  # promoted: the thread, the redrawn notice
    for run in ("r2", "r3"):
        gw.register_elsewhere(name, run)
    lifecycle.stage_version(svc, name, "2", event_id="e2")
    lifecycle.reject(svc, name, "2", user="UB", reason=text)
    gw.move(name, "3", "Production")  # by hand: the out-of-band alert
    sweep(svc, lock, [name])
    protection.revert(svc, name, key="stale", user="UA")  # the stale answer names the model
    key = json.loads(gw.get_version(name, "3").tag("oob_alert") or "{}").get("key", "")
    protection.accept(svc, name, key=key, user="UA", reason=text)
    for verb in ("status", "history", "promote", "rollback"):
        cmd = Command(verb, name, version="2" if verb == "promote" else "", reason=text)
        operations.answer_command(svc, cmd, user="UA", channel="C1", response_url="")
    plan = RollbackPlan(name, "3", "1", text)
    operations.rollback(svc, plan, user="UB", channel="C1", response_url="")
    alert = ModelAlert(name, "firing", "f", "2026-01-01T00:00:00Z", "", text, text, text, "", "")
    alerts.handle_alert(svc, alert)
    home_tab.publish_home(svc, "UA")
    facts = notice_facts(svc, gw.get_version(name, "1"))
    assert_inert(staging_notice(facts), *said(svc))
    # Not vacuous: each path spoke, and the hostile name reached it.
    posted = " ".join(text for text, _ in svc.notifier.posts)
    assert "Out-of-band change" in posted and "needs approval" in posted
    assert len(svc.notifier.told) >= 5 and "UA" in svc.notifier.homes
