"""Every message fits Slack's limits: the cutting helper, then each builder at the limits."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.block_kit import message_refusal, view_problems
from registry.flows import lifecycle, operations, protection
from registry.flows import notice as home_tab
from registry.flows.sweep import sweep
from registry.rules.commands import Command
from registry.rules.decisions import Clicker
from registry.rules.events import ModelAlert
from registry.rules.reports import Outcome, RollbackPlan, Standing, history_text, status_text
from registry.rules.text import MESSAGE_TEXT, cut, escape, fit_json, fit_lines
from registry.rules.versions import ModelVersion
from registry.views.alerts import (
    OutOfBandFacts,
    alert_plan,
    alert_text,
    out_of_band_alert,
    resolved_alert,
)
from registry.views.home import ModelRule, home_view
from registry.views.modals import accept_modal, reject_modal, rollback_modal
from registry.views.notice import NoticeFacts, decided_notice, staging_notice
from registry.views.plans import parse_plan_value, plan_blocks
from tests.support import Ticking, fake_services

# An `&` that does not start one of the three entities escape() writes: a cut entity.
BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
LINK = "<http://mlflow.example/#/models/m/versions/1|the rest in MLflow>"
escaped_text = st.text(alphabet="&<>ab \n", max_size=400).map(escape)


# -- cut: one text -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 99, 100])
def test_a_text_within_the_limit_is_left_whole(length):
    assert cut("x" * length, 100) == "x" * length
    assert cut("x" * length, 100, link=LINK) == "x" * length


def test_a_text_one_over_the_limit_is_cut_to_it_and_marked():
    assert cut("x" * 101, 100) == "x" * 99 + "…"


def test_a_cut_text_links_to_where_the_rest_is_read():
    cut_text = cut("x" * 500, 200, link=LINK)
    assert len(cut_text) == 200 and cut_text.endswith(f"… ({LINK})")


def test_a_cut_never_splits_an_entity_or_a_link():
    assert cut("ab&amp;cd", 5) == "ab…"  # not "ab&a…"
    assert cut("a <@U123> b", 7) == "a…"  # not "a <@U1…"
    assert cut("a <@U123> b", 10) == "a <@U123>…"


def test_a_link_longer_than_the_limit_is_left_out_rather_than_cut():
    assert cut("x" * 50, 20, link=LINK) == "x" * 19 + "…"


@settings(max_examples=200)
@given(text=escaped_text, limit=st.integers(1, 300), link=st.sampled_from(["", LINK]))
def test_any_escaped_text_is_cut_within_the_limit_at_a_safe_place(text, limit, link):
    cut_text = cut(text, limit, link=link)
    assert len(cut_text) <= limit
    assert not BROKEN_ENTITY.search(cut_text)
    assert cut_text == text or text.startswith(cut_text.split("…")[0])


# -- fit_lines: a list, "… and N more" -----------------------------------------------------


def test_lines_that_fit_are_joined_whole():
    assert fit_lines(["head", "a", "b"], 100) == "head\na\nb"


def test_lines_that_do_not_fit_end_with_how_many_more():
    lines = ["head"] + [f"line {i:02d}" for i in range(50)]
    fitted = fit_lines(lines, 100, link=LINK)
    assert len(fitted) <= 100
    shown = fitted.split("\n")
    assert shown[0] == "head" and shown[1:-1] == lines[1 : len(shown) - 1]
    assert shown[-1] == f"… and {51 - (len(shown) - 1)} more ({LINK})"


def test_the_more_line_counts_exactly_what_was_left_out():
    lines = [f"{i:03d}" for i in range(100)]  # 4 characters a line with its newline
    fitted = fit_lines(lines, 40)
    assert fitted == "\n".join(lines[:6]) + "\n… and 94 more"
    assert len(fitted) <= 40


def test_kept_lines_are_cut_rather_than_dropped():
    fitted = fit_lines(["h" * 200, "a", "b"], 100)
    assert len(fitted) <= 100 and fitted.startswith("h" * 50) and fitted.endswith("… and 2 more")


@settings(max_examples=200)
@given(
    lines=st.lists(escaped_text, max_size=60),
    limit=st.integers(40, 3000),
    link=st.sampled_from(["", LINK]),
)
def test_any_lines_fit_within_the_limit(lines, limit, link):
    fitted = fit_lines(lines, limit, link=link)
    assert len(fitted) <= limit
    assert not BROKEN_ENTITY.search(fitted)


# -- fit_json: a button value or private_metadata -----------------------------------------


def test_json_that_fits_is_compact_and_whole():
    assert fit_json({"model": "m", "reason": "r"}, 100) == '{"model":"m","reason":"r"}'


def test_json_too_long_shortens_the_named_field_and_keeps_the_rest():
    data = {"model": "m" * 255, "current": "3", "reason": '"é🙂&' * 400}
    value = fit_json(data, 2000, shorten="reason")
    assert len(value) <= 2000
    decoded = json.loads(value)
    assert decoded["model"] == data["model"] and decoded["current"] == "3"
    assert decoded["reason"].endswith("…") and data["reason"].startswith(decoded["reason"][:-1])


def test_json_that_cannot_fit_drops_what_may_be_dropped():
    data = {"model": "m", "response_url": "u" * 5000}
    assert json.loads(fit_json(data, 3000, drop=("response_url",))) == {"model": "m"}
    with pytest.raises(ValueError):
        fit_json(data, 3000)


# -- each builder at the limits the issue measured ------------------------------------------

NAME = ("m-" + "very.long_model-name" * 10)[:140]
LONGEST_NAME = "m" + "x.-_" * 63 + "zz"  # 255 characters, as MLflow and the door allow
AMPS = ("R&D <&> && " * 500)[:5000]  # escapes to more than 14,500 characters
UI = "http://mlflow.example:5000"
RUN_URL = f"{UI}/#/experiments/1/runs/{'r' * 32}"
RESPONSE_URL = "https://hooks.slack.com/actions/T0TEST/1234567890123/" + "a" * 200
NOW = 1_800_000_000.0


def version_url(name: str, version: str = "12") -> str:
    return f"{UI}/#/models/{name}/versions/{version}"


def metrics(count: int, name: str = "metric_{i:02d}_holdout_auc") -> dict[str, float]:
    return {name.format(i=i): 0.5 + i / 1000 for i in range(count)}


def notice_facts(name: str = NAME, **overrides) -> NoticeFacts:
    facts = {
        "model_name": name,
        "version": "12",
        "run_id": "r" * 32,
        "run_url": RUN_URL,
        "version_url": version_url(name),
        "requested_by": "UREQ",
        "requester": "UREQ",
        "git_commit": "abc123",
        "description": AMPS,
        "metrics": metrics(40),
        "production_version": "11",
        "production_metrics": metrics(40),
    }
    return NoticeFacts(**{**facts, **overrides})


def fits(message: tuple[str, list[dict]]) -> tuple[str, list[dict]]:
    """Assert Slack would take the message (the double's own check); return it."""
    text, blocks = message
    assert message_refusal({"text": text, "blocks": blocks}) is None
    assert not [t for t in shown_texts(blocks) if BROKEN_ENTITY.search(t)]
    return message


def fits_view(view: dict) -> dict:
    assert view_problems(view) == []
    return view


def fits_text(text: str) -> str:
    assert message_refusal({"text": text}) is None
    assert not BROKEN_ENTITY.search(text)
    return text


def shown_texts(blocks: list[dict]) -> list[str]:
    """Every text in the blocks, at any depth."""
    found: list[str] = []
    for block in blocks:
        for key, value in block.items():
            if key == "text" and isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):
                found += shown_texts([value])
            elif isinstance(value, list):
                found += shown_texts([v for v in value if isinstance(v, dict)])
    return found


def section_with(blocks: list[dict], needle: str) -> str:
    return next(t for t in shown_texts(blocks) if needle in t)


def test_the_notice_for_a_long_name_40_metrics_and_a_long_description_fits():
    _, blocks = fits(staging_notice(notice_facts()))
    header = blocks[0]["text"]["text"]
    assert len(header) == 150 and header.startswith(NAME) and header.endswith("…")
    description = section_with(blocks, "R&amp;D")
    assert "…" in description and version_url(NAME) in description
    table = section_with(blocks, "*Metrics*")
    assert re.search(r"\n… and \d+ more \(<http://mlflow\.example:5000/#/experiments/1/", table)
    assert table.count("```") == 2  # the rows it shows stay a closed code block


def test_the_notice_shows_all_metrics_and_the_description_whole_when_they_fit():
    _, blocks = fits(
        staging_notice(notice_facts(description="nightly & fresh", metrics=metrics(5)))
    )
    assert "nightly &amp; fresh" in shown_texts(blocks)
    table = section_with(blocks, "*Metrics*")
    assert "more" not in table and all(name in table for name in metrics(5))


def test_the_notice_fits_with_every_field_at_its_longest():
    longest = metrics(200, name="m{i:03d}" + "&" * 246)  # 200 names of 250 characters
    facts = notice_facts(LONGEST_NAME, metrics=longest, production_metrics=longest)
    fits(staging_notice(facts))
    reason = AMPS[:2000]  # the reject modal takes 2,000 characters
    standing = Standing("Approved, now Archived", "*Now Archived* since …", reason)
    outcome = Outcome("Rejected", ["UA"] * 30, NOW, reason=reason)
    _, blocks = fits(decided_notice(replace(facts, standing=standing), outcome))
    assert "…" in section_with(blocks, "*Rejected*")


def test_a_rollback_plan_with_a_long_reason_keeps_its_button_value_within_2000():
    reason = '"🙂&' * 166  # 498 characters; each emoji is 12 in JSON's ASCII escapes
    plan = RollbackPlan(LONGEST_NAME, "3", "1", reason, target_approved_by="UA")
    text, blocks = fits(plan_blocks(plan))
    [value] = {b["value"] for b in blocks[-1]["elements"]}
    again = parse_plan_value(value)
    assert (again.model, again.current, again.target) == (LONGEST_NAME, "3", "1")
    assert again.reason.endswith("…") and reason.startswith(again.reason[:-1])
    fits(plan_blocks(replace(plan, reason=AMPS[:500])))
    fits(alert_plan(replace(plan, alert="k" * 24), long_alert()))


def test_the_modals_fit_with_the_longest_name_and_a_long_response_url():
    plan = RollbackPlan(LONGEST_NAME, "3", "1", AMPS[:500])
    view = fits_view(rollback_modal(plan, channel="C" * 11, response_url=RESPONSE_URL))
    assert json.loads(view["private_metadata"])["response_url"] == RESPONSE_URL
    fits_view(reject_modal(LONGEST_NAME, "3", channel="C1", message_ts="1.2", home=True))
    fits_view(accept_modal(LONGEST_NAME, "k" * 24, channel="C1", message_ts="1.2"))


def test_history_50_with_long_reasons_fits_and_cuts_each_reason():
    entries = [
        {"type": "rejected", "at": f"2026-01-01T00:{i:02d}:00Z", "actor": "UA", "reason": AMPS}
        for i in range(50)
    ]
    versions = [mv(NAME, str(i), "Archived", log=json.dumps([e])) for i, e in enumerate(entries)]
    text = fits_text(history_text(NAME, versions, 50, url=version_url(NAME)))
    lines = text.split("\n")
    assert lines[0] == f"*{NAME}*: last 50 changes"
    assert all(line.endswith("…") for line in lines[1:] if not line.startswith("… and"))


def test_status_for_a_model_with_many_versions_fits_and_says_how_many_more():
    staged = [
        mv(NAME, str(i), "Staging", approvals="UA", metrics=json.dumps(metrics(60)))
        for i in range(300)
    ]
    text = fits_text(status_text(NAME, staged, 2, url=version_url(NAME)))
    assert re.search(r"\n… and \d+ more \(<http://mlflow", text)
    assert len(text) <= MESSAGE_TEXT


def test_the_home_tab_with_many_pending_versions_fits():
    versions = [
        mv(
            f"{LONGEST_NAME[:-2]}{i:02d}",
            "1",
            "Staging",
            requested_by="UREQ",
            metrics=json.dumps(metrics(60)),
            log=json.dumps([{"type": "staged", "at": "2026-01-01T00:00:00Z", "reason": AMPS}]),
        )
        for i in range(60)
    ]
    rules = {mv.name: ModelRule(Clicker("UA", is_approver=True), required=2) for mv in versions}
    view = fits_view(home_view(versions, rules=rules, now=NOW))
    assert any(MORE_SAID.fullmatch(t) for t in shown_texts(view["blocks"]))


def test_an_alert_with_long_labels_fits():
    alert = long_alert()
    fits((alert_text(alert, "2"), [section(alert_text(alert, "2"))]))
    assert alert_text(alert, "2").endswith(
        "<http://prometheus.example/graph|Open the alert's source>"
    )
    fits(out_of_band_alert(OutOfBandFacts(LONGEST_NAME, "k", ("2", "3"), "1")))


MORE_SAID = re.compile(r"… and \d+ more( \(.*\))?")


def long_alert() -> ModelAlert:
    return ModelAlert(
        LONGEST_NAME,
        "firing",
        "f",
        "2026-01-01T00:00:00Z",
        "",
        AMPS[:2000],
        AMPS[:2000],
        AMPS[:2000],
        "http://prometheus.example/graph",
        "",
    )


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def mv(name: str, version: str, stage: str, **tags: str) -> ModelVersion:
    return ModelVersion(
        name, version, stage, tags={f"registry_bot.{k}": v for k, v in tags.items()}
    )


# -- any input: every builder, then every workflow over the fakes --------------------------

# Model names as MLflow and the door allow them; texts built from what grows when escaped
# or put in JSON (`&`, quotes, emoji), and what Slack reads (`<@U…>`, newlines, `*`).
model_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}", fullmatch=True)
UNITS = ("&", "<", ">", "&amp;", "<@U1>", "🙂", '"', "\\", "x", " ", "\n", "*", "`")
long_texts = st.builds(
    lambda units, times: ("".join(units) * times)[:5000],
    st.lists(st.sampled_from(UNITS), min_size=1, max_size=8),
    st.integers(0, 2500),
)
metric_sets = st.builds(
    lambda count, stem: {f"{stem}{i}"[:250]: i / 7 for i in range(count)},
    st.integers(0, 200),
    st.text(alphabet="&<>_ab", max_size=250),
)


@settings(max_examples=40, deadline=None)
@given(name=model_names, text=long_texts, metrics=metric_sets, version=st.integers(1, 10**6))
def test_any_input_builds_messages_and_views_within_slacks_limits(name, text, metrics, version):
    facts = notice_facts(
        name,
        version=str(version),
        description=text,
        metrics=metrics,
        git_commit=text,
        production_metrics=metrics,
        requested_by=text,
        slot_lines=(escape(text),) * 5,
    )
    fits(staging_notice(facts))
    fits(staging_notice(replace(facts, status_line=escape(text))))
    standing = Standing("Production again", escape(text), text)
    fits(decided_notice(replace(facts, standing=standing), Outcome("Rejected", [text], NOW, text)))
    plan = RollbackPlan(name, str(version), "1", text[:500], target_approved_by=text)
    fits(plan_blocks(plan))
    fits(alert_plan(replace(plan, alert="k" * 24), text_alert(name, text)))
    fits_view(rollback_modal(plan, channel="C1", response_url=RESPONSE_URL))
    fits_view(reject_modal(name, str(version), channel="C1", message_ts="1.2"))
    fits_view(accept_modal(name, "k" * 24, channel="C1", message_ts="1.2"))
    oob = OutOfBandFacts(name, "k" * 24, tuple(str(v) for v in range(version % 300)), "1")
    fits(out_of_band_alert(oob))
    fits(resolved_alert(oob, escape(text) or "Accepted."))


@settings(max_examples=25, deadline=None)
@given(name=model_names, text=long_texts, metrics=metric_sets, count=st.integers(1, 120))
def test_any_registry_reports_within_slacks_limits(name, text, metrics, count):
    entry = {"type": "rejected", "at": "2026-01-01T00:00:00Z", "actor": "UA", "reason": text}
    versions = [
        mv(
            name,
            str(v),
            ("Staging", "Production", "Archived")[v % 3],
            metrics=json.dumps(metrics),
            approvals="UA,UB",
            decided_by="UA",
            requested_by=text,
            log=json.dumps([entry] * 3),
        )
        for v in range(count)
    ]
    fits_text(status_text(name, versions, 2, url=version_url(name)))
    fits_text(history_text(name, versions, 100, url=version_url(name)))
    rules = {name: ModelRule(Clicker("UA", is_approver=True), required=2)}
    fits_view(home_view(versions, rules=rules, now=NOW, url=UI))


@settings(max_examples=15, deadline=None)
@given(name=model_names, text=long_texts, metrics=metric_sets)
def test_every_workflow_over_a_long_winded_registry_stays_within_slacks_limits(name, text, metrics):
    """The fake notifier refuses what Slack refuses: every post, update, reply, answer and
    Home tab of these workflows is checked (tests/fakes.py)."""
    svc = fake_services(
        approvers=("UA", "UB", "UREQ"),
        clock=Ticking(NOW),
        policy="defaults:\n  protect_production: alert\n",
        mlflow_ui_url=UI,
    )
    gw = svc.gateway
    gw.register_elsewhere(name, "r1")
    tags = {"registry_bot.description": text[:4000], "registry_bot.metrics": json.dumps(metrics)}
    gw.set_tags(name, "1", tags)
    lifecycle.stage_version(svc, name, "1", event_id="e1")
    lifecycle.approve(svc, name, "1", user="UA")
    gw.register_elsewhere(name, "r2")
    gw.set_tags(name, "2", tags)
    lifecycle.stage_version(svc, name, "2", event_id="e2")
    lifecycle.reject(svc, name, "2", user="UB", reason=text[:2000])
    for verb in ("status", "history", "rollback"):
        cmd = Command(verb, name, reason=text[:500], count=100)
        operations.answer_command(svc, cmd, user="UA", channel="C1", response_url="")
    gw.register_elsewhere(name, "r3")
    gw.move(name, "3", "Production")  # by hand: the out-of-band alert, then its revert
    sweep(svc, lambda _: nullcontext(), [name])
    key = json.loads(gw.get_version(name, "3").tag("oob_alert") or "{}").get("key", "")
    protection.revert(svc, name, key=key, user="UA")
    home_tab.publish_home(svc, "UA")
    assert svc.notifier.posts and svc.notifier.updates and len(svc.notifier.told) == 3
    assert any("reverted" in text.lower() for _, text in svc.notifier.updates)


def text_alert(name: str, text: str) -> ModelAlert:
    url = "http://prometheus.example/graph?q=" + text.replace(" ", "+")[:3000]
    return ModelAlert(
        name,
        "firing",
        "f",
        "2026-01-01T00:00:00Z",
        "",
        text[:2000],
        text[:2000],
        text[:2000],
        url,
        "",
    )
