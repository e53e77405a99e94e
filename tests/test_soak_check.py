"""The soak's click check: which ephemeral answers which click (no stack needed)."""

from __future__ import annotations

from bench.soak.check import Findings, Seen, _check_click
from bench.soak.drive import Click
from registry.rules.versions import ModelVersion


def seen(ephemerals: list[dict], versions: list[ModelVersion] | None = None) -> Seen:
    return Seen(
        versions={"m": versions or []},
        messages=[],
        side=None,  # type: ignore[arg-type]  # read only for clicks with a response URL
        notice_at={},
        ephemerals=ephemerals,
    )


def lost(state: Seen, *clicks: Click) -> list[str]:
    found = Findings()
    for click in clicks:
        _check_click(state, click, found)
    return found.lost


def test_an_answer_about_v17_does_not_answer_a_click_on_v1():
    told = [{"user": "U1", "text": "m v17 was promoted to Production, approved by U2."}]
    assert lost(seen(told), Click("approve", "U1", "m", "1")) != []
    assert lost(seen(told), Click("approve", "U1", "m", "17")) == []


def test_one_ephemeral_answers_one_click():
    told = [{"user": "U1", "text": "Slack could not say who you are; please try again."}]
    clicks = Click("approve", "U1", "m", "3"), Click("approve", "U1", "m", "4")
    assert len(lost(seen(told), *clicks)) == 1
    assert lost(seen(told * 2), *clicks) == []


def test_a_decided_click_leaves_the_ephemeral_to_the_click_it_answered():
    decided = ModelVersion(
        "m",
        "3",
        "Production",
        tags={"registry_bot.decision": "approved", "registry_bot.decided_by": "U1"},
    )
    told = [{"user": "U1", "text": "Please try again."}]
    clicks = Click("approve", "U1", "m", "3"), Click("approve", "U1", "m", "4")
    assert lost(seen(told, [decided]), *clicks) == []
    assert len(lost(seen([], [decided]), *clicks)) == 1
