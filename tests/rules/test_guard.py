"""The post-promotion guard: its pure rules and texts, then the worker's flow against fakes."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest

from registry.flows.alerts import ChangeInFlight, handle_alert
from registry.flows.sweep import sweep
from registry.ports.services import Services
from registry.rules.events import ModelAlert
from registry.rules.guard import (
    ALERT_TAG,
    ALERTMANAGER,
    NO_EARLIER,
    NO_PRODUCTION,
    NOT_REGISTERED,
    alert_key,
    alert_reason,
    alert_time,
    find_alert,
    guard_refusal,
)
from registry.rules.policy import Guard, parse_policy
from registry.rules.record import LifecycleEvent, history_of
from registry.rules.reports import RollbackPlan, history_text
from registry.rules.settings import Settings
from registry.rules.versions import ModelVersion
from registry.views.alerts import alert_plan, alert_text, closed_plan, link_target, resolved_note
from registry.views.plans import ROLLBACK_CANCEL, ROLLBACK_CONFIRM, parse_plan_value
from tests.fakes import FakeDirectory, FakeGateway, RecordingNotifier
from tests.support import Clock

DAY = 86400.0
NOW = 1_800_000_000.0
FIRING = ModelAlert(
    model_name="churn",
    status="firing",
    fingerprint="3f2a9c1b0d4e5f60",
    starts_at="2027-01-15T08:00:00.123456789Z",
    ends_at="0001-01-01T00:00:00Z",
    alertname="PredictionErrorRate",
    summary="More than 5% of predictions fail",
    description="Error rate over the last 5 minutes",
    generator_url="http://prometheus.example:9090/graph?g0.expr=x&g0.tab=1",
)


def mv(version: str, stage: str, **tags: str) -> ModelVersion:
    return ModelVersion(
        "churn", version, stage, tags={f"registry_bot.{k}": v for k, v in tags.items()}
    )


def served(since: float = NOW - 3600) -> list[ModelVersion]:
    """v2 Production since `since`, over v1, which served before it."""
    return [
        mv("2", "Production", production_since=str(since), decision="approved"),
        mv("1", "Archived", production_since=str(since - DAY), production_until=str(since)),
    ]


# -- which alert concerns which Production -------------------------------------------------


def test_an_alert_after_a_promotion_concerns_the_new_production():
    assert guard_refusal(served(), "", Guard(), NOW) == ""
    assert guard_refusal(served(), "2", Guard(), NOW) == ""


@pytest.mark.parametrize(
    ("versions", "named", "says"),
    [
        ([], "", NOT_REGISTERED),
        ([mv("1", "Archived", production_until="1")], "", NO_PRODUCTION),
        ([mv("1", "Production")], "", "not made Production by registry-bot"),
        (served(NOW - DAY - 1), "", "outside the 24h window"),
        (served(), "1", "the alert names v1, but Production is v2"),
        ([mv("1", "Production", production_since=str(NOW - 60))], "", NO_EARLIER),
    ],
)
def test_alerts_that_concern_no_recent_production_say_why(versions, named, says):
    assert says in guard_refusal(versions, named, Guard(), NOW)


def test_the_window_is_the_models_guard_window():
    assert guard_refusal(served(NOW - 7200), "", Guard(window=3600), NOW).startswith("its ")
    assert guard_refusal(served(NOW - 1800), "", Guard(window=3600), NOW) == ""


def test_the_window_counts_from_the_promotion_the_record_logs():
    log = json.dumps([{"type": "promoted", "at": str(NOW - 3590)}])
    logged = [mv("2", "Production", production_since=str(NOW - 3601), log=log), served()[1]]
    assert guard_refusal(logged, "", Guard(window=3600), NOW) == ""  # the event's time, as the door
    assert guard_refusal(served(NOW - 3601), "", Guard(window=3600), NOW) != ""


# -- keys, reasons and texts -----------------------------------------------------------------


def test_an_alert_is_known_by_its_fingerprint_and_start():
    key = alert_key("3f2a", "2027-01-15T08:00:00Z")
    assert key == alert_key("3f2a", "2027-01-15T08:00:00Z") and len(key) == 24
    assert key != alert_key("3f2a", "2027-01-15T09:00:00Z")
    assert key != alert_key("3f2b", "2027-01-15T08:00:00Z")


def test_the_reason_is_the_alertname_and_its_summary():
    assert alert_reason(FIRING) == "alert PredictionErrorRate: More than 5% of predictions fail"
    bare = ModelAlert("churn", "firing", "f", "2027-01-15T08:00:00Z", description="  two\nlines ")
    assert alert_reason(bare) == "alert unnamed: two lines"
    long = alert_reason(ModelAlert("churn", "firing", "f", "t", summary="x" * 1000))
    assert len(long) == 300 and long.endswith("…")


def test_alert_text_is_escaped_and_links_only_to_http():
    hostile = ModelAlert(
        "churn",
        "firing",
        "f",
        "2027-01-15T08:00:00Z",
        alertname="<!channel>",
        summary="a < b & c > d",
        generator_url="https://prom.example/graph?a=1&b=<2>|x",
    )
    text = alert_text(hostile, "2")
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert ">a &lt; b &amp; c &gt; d" in text
    assert "<https://prom.example/graph?a=1&amp;b=&lt;2&gt;%7Cx|Open the alert's source>" in text
    assert "since 2027-01-15 08:00 UTC" in text
    assert link_target("javascript:alert(1)") == "" and link_target("http://a b") == ""


def test_alert_times_are_read_with_nanoseconds_and_go_zero_time_is_none():
    assert alert_time("2027-01-15T08:00:00.123456789Z") == pytest.approx(1800000000.123456, abs=1e6)
    assert alert_time("0001-01-01T00:00:00Z") is None
    assert alert_time("soon") is None


def test_the_alert_plan_is_the_rollback_plan_naming_the_alert():
    plan = RollbackPlan("churn", "2", "1", alert_reason(FIRING), alert="k1")
    text, blocks = alert_plan(plan, FIRING)
    assert text.startswith("Alert PredictionErrorRate for churn: Roll churn back from v2 to v1?")
    assert "*Alert PredictionErrorRate* is firing for *churn* v2" in blocks[0]["text"]["text"]
    assert "Open the alert's source" in blocks[0]["text"]["text"]
    buttons = [el for b in blocks if b["type"] == "actions" for el in b["elements"]]
    assert [(b["text"]["text"], b["action_id"]) for b in buttons] == [
        ("Confirm", ROLLBACK_CONFIRM),
        ("Cancel", ROLLBACK_CANCEL),
    ]
    assert parse_plan_value(buttons[0]["value"]) == plan


def test_a_closed_plan_keeps_the_alert_and_loses_its_buttons():
    _, blocks = alert_plan(RollbackPlan("churn", "2", "1", "r", alert="k1"), FIRING)
    closed = closed_plan(blocks, "*Cancelled* by <@UA>")
    assert closed[0] == blocks[0]
    assert not [b for b in closed if b["type"] == "actions"]
    assert closed[-1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "*Cancelled* by <@UA>"}],
    }


def test_the_resolved_note_says_when():
    ended = ModelAlert("churn", "resolved", "f", "t", ends_at="2027-01-15T09:30:00Z", alertname="E")
    assert resolved_note(ended) == ":white_check_mark: Alert E resolved at 2027-01-15 09:30 UTC."


# -- the worker's flow, against the fakes ----------------------------------------------------


class Guarded:
    """A model with v2 just promoted over v1, the services a worker would have, a clock."""

    def __init__(self, policy: str = "", *, promoted_ago: float = 600.0) -> None:
        self.clock = Clock(NOW)
        self.gateway = FakeGateway(self.clock)  # dates each change as MLflow does
        self.notifier = RecordingNotifier()
        self.events: list[LifecycleEvent] = []
        settings = Settings(
            mlflow_tracking_uri="fake",
            slack_channel="CNOTICES",
            approvers=("UA",),
            policy=parse_policy(policy, "policy.yaml") if policy else Settings("x").policy,
        )
        self.svc = Services(
            self.gateway,
            self.notifier,
            settings,
            FakeDirectory(["UA"]),
            self.clock,
            emit=self.events.append,
        )
        since = NOW - promoted_ago
        for version, stage, tags in (
            ("1", "Archived", {"production_since": since - DAY, "production_until": since}),
            (
                "2",
                "Production",
                {"production_since": since, "decision": "approved", "announced": since},
            ),
        ):
            self.gateway.register("churn", f"run{version}", "model", "", {})
            self.gateway.set_tags(
                "churn", version, {f"registry_bot.{k}": str(v) for k, v in tags.items()}
            )
            self.gateway.move("churn", version, stage)

    def handle(self, alert: ModelAlert = FIRING) -> str:
        return handle_alert(self.svc, alert)

    def stage(self, version: str) -> str:
        return self.gateway.get_version("churn", version).stage

    def record(self) -> dict:
        found = find_alert(
            self.gateway.versions("churn"), alert_key(FIRING.fingerprint, FIRING.starts_at)
        )
        assert found is not None
        return found[1]


def test_a_firing_alert_posts_one_plan_in_the_channel_and_its_repeats_nothing():
    model = Guarded()
    assert model.handle() == "proposed"
    assert [model.handle() for _ in range(3)] == ["duplicate"] * 3
    [(text, meta)] = model.notifier.posts
    assert text.startswith("Alert PredictionErrorRate for churn: Roll churn back from v2 to v1?")
    record = model.record()
    assert (record["action"], record["current"], record["target"], record["ts"]) == (
        "propose",
        "2",
        "1",
        "1.000",
    )
    assert record["nonce"] in meta and record["channel"] == "CNOTICES"
    [entry] = [
        e
        for e in history_of(model.gateway.get_version("churn", "2"))
        if e["type"] == "alert_received"
    ]
    assert (entry["actor"], entry["reason"]) == (ALERTMANAGER, alert_reason(FIRING))
    assert [e.type for e in model.events] == ["alert_received"]
    assert model.stage("2") == "Production" and model.notifier.told == []


def test_a_new_start_of_the_same_alert_is_a_new_alert():
    model = Guarded()
    assert model.handle() == "proposed"
    again = ModelAlert(**{**FIRING.as_kwargs(), "starts_at": "2027-01-15T09:00:00Z"})
    assert model.handle(again) == "proposed"
    assert len(model.notifier.posts) == 2


class FlakyNotifier(RecordingNotifier):
    """Fails one post: before Slack took it, or after (the answer lost on the way back)."""

    def __init__(self, *, after: bool) -> None:
        super().__init__()
        self.after, self.failed = after, False

    def post(self, text, blocks, *, channel="", **meta):
        if self.failed:
            return super().post(text, blocks, channel=channel, **meta)
        self.failed = True
        if self.after:
            super().post(text, blocks, channel=channel, **meta)
        raise ConnectionError("Slack did not answer")


@pytest.mark.parametrize("after", [False, True], ids=["before Slack took it", "answer lost"])
def test_a_rerun_after_a_failed_post_posts_the_plan_exactly_once(after):
    model = Guarded()
    model.notifier = model.svc.notifier = FlakyNotifier(after=after)
    with pytest.raises(ConnectionError):
        model.handle()
    assert "ts" not in model.record()
    assert model.handle() == "proposed"
    assert model.handle() == "duplicate"
    assert len(model.notifier.posts) == 1 and model.record()["ts"] == "1.000"
    assert [e.type for e in model.events] == ["alert_received"]


def test_a_resolved_alert_adds_one_note_to_its_plans_thread():
    model = Guarded()
    model.handle()
    done = ModelAlert(
        **{**FIRING.as_kwargs(), "status": "resolved", "ends_at": "2027-01-15T09:30:00Z"}
    )
    assert model.handle(done) == "noted"
    assert model.handle(done) == "duplicate"
    assert model.notifier.replies == [("1.000", resolved_note(done))]
    other = ModelAlert(**{**done.as_kwargs(), "fingerprint": "ffff"})
    assert model.handle(other) == "ignored"


def test_with_action_rollback_the_alert_alone_rolls_back_and_says_so():
    model = Guarded("defaults:\n  guard: {action: rollback}\n")
    assert model.handle() == "rolled_back"
    assert (model.stage("1"), model.stage("2")) == ("Production", "Archived")
    rolled = history_of(model.gateway.get_version("churn", "1"))[-1]
    assert (rolled["type"], rolled["actor"], rolled["reason"], rolled["previous_version"]) == (
        "rolled_back",
        ALERTMANAGER,
        alert_reason(FIRING),
        "2",
    )
    history = history_text("churn", model.gateway.versions("churn"), 5)
    assert f"rolled back from v2 to v1 by alertmanager: {alert_reason(FIRING)}" in history
    [(announcement, _)] = model.notifier.posts
    assert announcement.startswith("alertmanager rolled churn back from v2 to v1")
    [(thread, note)] = model.notifier.replies
    assert thread == "1.000" and "PredictionErrorRate" in note and "guard.action: rollback" in note
    assert model.notifier.told == []  # nobody in Slack is "alertmanager"
    assert model.handle() == "duplicate" and model.stage("1") == "Production"
    assert [e.type for e in model.events] == ["alert_received", "archived", "rolled_back"]


@pytest.mark.parametrize(
    ("alert", "promoted_ago"),
    [
        (FIRING, DAY + 1),
        (ModelAlert(**{**FIRING.as_kwargs(), "version": "1"}), 600),
        (ModelAlert(**{**FIRING.as_kwargs(), "model_name": "nothing-like-it"}), 600),
    ],
    ids=["outside the window", "another version", "unknown model"],
)
def test_alerts_that_concern_nothing_change_nothing(alert, promoted_ago):
    model = Guarded(promoted_ago=promoted_ago)
    before = {v.version: dict(v.tags) for v in model.gateway.versions("churn")}
    assert model.handle(alert) == "ignored"
    assert {v.version: dict(v.tags) for v in model.gateway.versions("churn")} == before
    assert model.notifier.posts == [] and model.events == []


def test_a_plans_record_survives_everything_but_the_registry():
    model = Guarded()
    model.handle()
    tags = model.gateway.get_version("churn", "2").tags
    key = alert_key(FIRING.fingerprint, FIRING.starts_at)
    assert json.loads(tags[f"registry_bot.{ALERT_TAG}{key}"])["ts"] == "1.000"


def test_an_alert_while_a_promotion_is_half_done_waits_for_it_and_then_gets_its_plan():
    # v3 moved to Production, and its worker died before recording it: which Production
    # the alert is about is not known until the promotion is finished. The task is tried
    # again (transient), never dropped; once the sweep finished it, the plan is for v3.
    model = Guarded()
    model.gateway.register("churn", "run3", "model", "", {})
    model.gateway.move("churn", "3", "Staging")
    model.gateway.set_tags("churn", "3", {"registry_bot.decision": "approved"})
    model.gateway.move("churn", "3", "Production")  # then the worker died
    with pytest.raises(ChangeInFlight):
        model.handle(ModelAlert(**{**FIRING.as_kwargs(), "version": "3"}))
    assert model.notifier.posts == []
    sweep(model.svc, lambda name: nullcontext(), ["churn"])
    assert model.handle(ModelAlert(**{**FIRING.as_kwargs(), "version": "3"})) == "proposed"
    assert "back from v3 to v2" in model.notifier.posts[-1][0]
