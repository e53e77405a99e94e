"""What people read, held to one vocabulary and one format.

The demo's story runs over the in-memory fakes (staged, approved, withdrawn by the
requester, approved again, rolled back, an alert with nothing left to restore, a run kept
out by a gate), then every message, update, thread reply, answer, Home tab, plan and modal
it produced is read as a person would, and checked: no raw event name (`gate_failed`), no
"(s)", a rollback named by both its ends (never "v3 rolled back" for v3 restored), a
withdrawal called one, numbers in the one format (`format_number`), times in the one
format (24-hour UTC) and never the same date twice in a line.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from registry.flows import lifecycle, operations
from registry.flows.alerts import handle_alert
from registry.flows.notice import publish_home
from registry.rules.commands import parse_command
from registry.rules.events import ModelAlert, TrainingEvent
from registry.rules.record import EVENT_TYPES
from registry.rules.reports import CHANGE_WORDS, plan_rollback
from registry.rules.text import format_number, format_span, plural
from registry.views.modals import reject_modal, rollback_modal
from registry.views.plans import plan_blocks
from tests.support import fake_services

MODEL = "churn"
RUNS = [
    {"accuracy": 0.8540, "f1": 0.7380},
    {"accuracy": 0.86, "f1": 0.74},
    {"accuracy": 0.87123, "f1": 0.7500001},
    {"accuracy": 0.84, "f1": 0.6},  # fails the f1 gate: kept out of Staging
]
POLICY = """
defaults:
  gates:
    - metric: accuracy
      min: 0.8
    - metric: f1
      no_worse_than_production: 0.05
  protect_production: off
"""
ALERT = ModelAlert(
    model_name=MODEL,
    status="firing",
    fingerprint="f1",
    starts_at="2027-01-15T08:00:00Z",
    alertname="PredictionErrorRate",
    summary="More than 5% of predictions fail",
)
# Every change's own name (and its published name) that must never reach a person.
NAMES = [*EVENT_TYPES.items(), *((kind, kind) for kind in CHANGE_WORDS)]
RAW_EVENTS = sorted({name for pair in NAMES for name in pair if "_" in name})
NUMBER = re.compile(r"(?<![\w.:/-])[+-]?\d+\.\d+(?:e[+-]\d+)?(?![\w.])")
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


def _texts(node) -> list[str]:
    """Every text a person reads in blocks, a view or a modal."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                found.append(value)
            elif key not in ("value", "action_id", "block_id", "private_metadata", "url"):
                found += _texts(value)
        return found
    if isinstance(node, list):
        return [text for item in node for text in _texts(item)]
    return []


def _stage(svc, run: int) -> str:
    event = TrainingEvent(
        MODEL, f"run-{run}", requested_by="URITA", metrics=RUNS[run - 1], description=f"Run {run}"
    )
    version = lifecycle.stage_training_event(svc, event, event_id=f"e{run}").version
    svc.clock.advance(60)
    return version


@pytest.fixture(scope="module")
def story() -> dict[str, list[str]]:
    """Run the demo's story and return what each kind of surface said."""
    svc = fake_services(approvers=("UADA", "UGRACE"), policy=POLICY, mlflow_ui_url="http://ui")
    v1 = _stage(svc, 1)
    assert lifecycle.approve(svc, MODEL, v1, user="UADA") == "promoted"
    v2 = _stage(svc, 2)
    assert lifecycle.reject(svc, MODEL, v2, user="URITA", reason="wrong data") == "rejected"
    v3 = _stage(svc, 3)
    assert lifecycle.approve(svc, MODEL, v3, user="UADA") == "promoted"
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "v3 misbehaves")
    plan_text, plan_view = plan_blocks(plan)
    modal = rollback_modal(plan, channel="CNOTICES", response_url="")
    assert operations.rollback(svc, plan, user="UADA", channel="CNOTICES", response_url="")
    svc.clock.advance(60)
    assert handle_alert(svc, ALERT) == "no plan"
    _stage(svc, 4)
    for command in ("status churn", "history churn", "help"):
        operations.answer_command(
            svc, parse_command(command), user="UADA", channel="CNOTICES", response_url=""
        )
    for user in ("UADA", "URITA", "UGRACE"):
        publish_home(svc, user)
    said = svc.notifier
    return {
        "posts": [
            t for (t, _), b in zip(said.posts, said.blocks, strict=True) for t in [t, *_texts(b)]
        ],
        "updates": [t for (_, t) in said.updates] + _texts(said.update_blocks),
        "replies": [t for _, t in said.replies],
        "answers": [t for _, t in said.told],
        "homes": _texts(list(said.homes.values())),
        "plans": [plan_text, *_texts(plan_view)],
        "modals": _texts(
            [modal, reject_modal(MODEL, v2, channel="C", message_ts="1.0", withdraw=True)]
        ),
    }


def _all(story) -> list[tuple[str, str]]:
    return [(kind, text) for kind, texts in story.items() for text in texts]


def test_no_raw_event_name_and_no_plural_in_brackets_reaches_people(story):
    assert {"gate_failed", "alert_received", "rolled_back"} <= set(RAW_EVENTS)
    for kind, text in _all(story):
        assert not [n for n in RAW_EVENTS if n in text], (kind, text)
        assert "(s)" not in text and "may rollback" not in text, (kind, text)


def test_a_rollback_is_named_by_both_its_ends_never_as_the_restored_version_rolled_back(story):
    said = [text for _, text in _all(story)]
    assert any("rolled back from v3 to v1" in text for text in said)
    for text in said:
        assert not re.search(r"\bv\d+ (was )?rolled back\b(?! from)", text), text


def test_the_requesters_withdrawal_is_called_one_everywhere(story):
    said = [text for _, text in _all(story)]
    assert any("v2 withdrawn by <@URITA>" in text for text in story["homes"])
    assert any("v2 withdrawn by <@URITA>" in text for text in story["answers"])
    assert not [text for text in said if re.search(r"\bv2 (was )?rejected\b", text)]
    assert "Withdraw version" in story["modals"] and "Why withdraw churn v2?" in story["modals"]
    assert "Reject version" not in story["modals"]


def test_a_version_kept_out_by_a_gate_is_no_staging_candidate(story):
    kept = [t for t in story["posts"] if t.startswith("churn v4")]
    assert "churn v4: kept out of Staging by its gates" in kept
    assert "churn v4: Staging candidate" not in kept


def test_every_number_is_in_the_one_format(story):
    seen = []
    for kind, text in _all(story):
        visible = re.sub(r"<[^>|]*\|", "<", text)  # a link's target is no number people read
        for number in NUMBER.findall(visible):
            seen.append(number)
            signed = number.startswith("+")
            assert number == format_number(float(number), signed=signed), (kind, number, text)
    assert {"0.854", "0.8712", "0.6", "0.05"} <= {n.lstrip("+") for n in seen}


def test_every_time_is_24_hour_utc_and_no_line_says_a_date_twice(story):
    for kind, text in _all(story):
        assert not re.search(r"\b(AM|PM|am|pm)\b", text), (kind, text)
        for line in text.splitlines():
            dates = [stamp[:10] for stamp in STAMP.findall(line)]
            assert len(dates) == len(set(dates)), (kind, line)
            assert line.count(" UTC") <= max(1, len(set(dates))), (kind, line)


def test_where_mlflow_shows_production_is_said_on_the_production_notice(story):
    hint = [t for t in story["updates"] if t.startswith("In MLflow it is the version with")]
    assert hint and "`@production`" in hint[0] and "*New model registry UI*" in hint[0]


def test_the_helpers_say_it_once():
    assert plural(1, "approval") == "1 approval" and plural(2, "approval") == "2 approvals"
    assert plural(0, "change") == "0 changes"
    day = datetime(2026, 11, 29, 22, 13, 20, tzinfo=UTC).timestamp()
    assert format_span(day, day + 30) == "on 2026-11-29 at 22:13 UTC, for under a minute"
    assert format_span(day, day + 600) == "on 2026-11-29 from 22:13 to 22:23 UTC"
    assert format_span(day, day + 7200) == "from 2026-11-29 22:13 to 2026-11-30 00:13 UTC"
    numbers = [0.854, 0.0606838, 46.0, 12345.6, 1e-5, 0.0]
    assert [format_number(n) for n in numbers] == ["0.854", "0.06068", "46", "12346", "1e-05", "0"]
    assert format_number(0.0172, signed=True) == "+0.0172"
    assert format_number(-0.014, signed=True) == "-0.014"
