"""The evidence flow over the in-memory fakes: what the reply says, what is uploaded once,
what a failure says, and what a rerun after a crash does (SPEC 15)."""

from __future__ import annotations

import json

import pytest

from registry.flows import lifecycle
from registry.flows.evidence import post_evidence
from registry.ports.evidence import ChannelBusy, ModelFiles
from registry.rules.events import TrainingEvent
from registry.rules.evidence import MAX_IMAGE_BYTES, PNG_MAGIC, TrendPoint
from registry.rules.text import SECTION_TEXT
from tests.fakes import Crash, FakeEvidence, FakeUploads
from tests.support import fake_services

MODEL = "churn"


def mlmodel(columns: dict[str, str]) -> str:
    inputs = json.dumps([{"type": t, "name": n, "required": True} for n, t in columns.items()])
    outputs = json.dumps([{"type": "double", "required": True}])
    return f"flavors: {{}}\nsignature:\n  inputs: '{inputs}'\n  outputs: '{outputs}'\n"


PICTURE = PNG_MAGIC + b"picture"


@pytest.fixture
def svc():
    """Production v1 and a noticed Staging v2 over the fakes, with evidence."""
    svc = fake_services()
    svc.evidence, svc.uploads = FakeEvidence(), FakeUploads()
    gw = svc.gateway
    gw.add_run("r1", {"accuracy": 0.9})
    gw.add_run("r2", {"accuracy": 0.92})
    gw.register_elsewhere(MODEL, "r1")
    gw.move(MODEL, "1", "Production")
    gw.register_elsewhere(MODEL, "r2")
    gw.move(MODEL, "2", "Staging")
    gw.set_tags(
        MODEL, "2", {"registry_bot.notice_channel": "CNOTICES", "registry_bot.notice_ts": "9.0"}
    )
    svc.evidence.models[f"{MODEL}/1"] = ModelFiles(
        mlmodel({"a": "double", "b": "long"}), "numpy==1.26.0\nscikit-learn\n"
    )
    svc.evidence.models[f"{MODEL}/2"] = ModelFiles(
        mlmodel({"a": "string", "c": "double"}), "numpy==2.0.0\nscikit-learn\nxgboost==2.1.4\n"
    )
    svc.evidence.runs["r2"] = {"plots/roc.png": PICTURE, "confusion_matrix.png": PICTURE}
    svc.evidence.points[MODEL] = [
        TrendPoint("1", {"accuracy": 0.9}),
        TrendPoint("2", {"accuracy": 0.92}),
    ]
    return svc


def reply_texts(svc) -> list[str]:
    return [text for ts, text in svc.notifier.replies if ts == "9.0"]


def test_the_reply_names_every_change_and_the_files_follow_once(svc):
    assert post_evidence(svc, MODEL, "2") == "shown"
    [text] = reply_texts(svc)
    assert "removed input `b` (long) :warning: *breaking*" in text
    assert "retyped input `a`: double → string :warning: *breaking*" in text
    assert "added input `c` (double)" in text
    assert "re-pinned `numpy`: ==1.26.0 → ==2.0.0" in text
    assert "added `xgboost==2.1.4`" in text
    titles = [title for _, title, _, _ in svc.uploads.shared]
    assert titles == [
        "confusion_matrix.png",
        "plots/roc.png",
        f"{MODEL}: accuracy over the last 2 versions",
    ]
    assert {(c, t) for _, _, c, t in svc.uploads.shared} == {("CNOTICES", "9.0")}
    [(_, metrics, points)] = svc.evidence.charts
    assert metrics == ["accuracy"] and [p.production for p in points] == [True, False]

    assert post_evidence(svc, MODEL, "2") == "already_shown"
    assert len(reply_texts(svc)) == 1 and len(svc.uploads.shared) == 3


def test_a_run_that_died_after_sharing_is_finished_without_a_second_upload(svc):
    svc.uploads.die_after = lambda file_id, title: title == "plots/roc.png"
    with pytest.raises(Crash):
        post_evidence(svc, MODEL, "2")
    assert post_evidence(svc, MODEL, "2") == "shown"
    titles = [title for _, title, _, _ in svc.uploads.shared]
    assert sorted(titles) == sorted(set(titles)) and len(titles) == 3
    assert len(svc.uploads.started) == 3  # the shared picture was not uploaded again
    assert len(reply_texts(svc)) == 1  # the reply, found by its nonce, is not repeated


def test_a_refused_upload_is_one_line_and_the_rest_goes_on(svc):
    svc.uploads.refuse = "missing_scope"
    assert post_evidence(svc, MODEL, "2") == "shown"
    first, closing = reply_texts(svc)
    assert "removed input `b`" in first
    lines = closing.splitlines()[1:]
    assert len(lines) == 3
    assert all("could not be uploaded: Slack answered missing_scope." in line for line in lines)
    assert svc.notifier.posts == [] and svc.notifier.updates == []  # the notice is untouched


def test_a_large_or_false_picture_is_named_and_not_uploaded(svc):
    svc.evidence.runs["r2"] = {
        "big.png": PNG_MAGIC + b"x" * MAX_IMAGE_BYTES,
        "bad.png": b"GIF89a not a png",
        "a.png": PICTURE,
        "b.png": PICTURE,
        "c.png": PICTURE,
    }
    post_evidence(svc, MODEL, "2")
    [text] = reply_texts(svc)
    assert "`big.png` is 5.0 MB, over the 5 MB limit" in text
    assert "`bad.png` is not a PNG or JPEG picture" in text
    assert "1 more pictures match; the first 4 are shown" in text
    titles = [title for _, title, _, _ in svc.uploads.shared]
    assert titles[:2] == ["a.png", "b.png"] and len(titles) == 3  # c.png is the fifth, left out


def test_nothing_logged_is_one_line(svc):
    svc.evidence.models[f"{MODEL}/2"] = ModelFiles()
    svc.evidence.runs["r2"] = {}
    post_evidence(svc, MODEL, "2")
    [text] = reply_texts(svc)
    assert text.splitlines()[1] == (
        ":warning: Not logged: no signature logged; no requirements.txt; "
        "no pictures matching *.png."
    )


def test_an_unreadable_signature_is_said(svc):
    svc.evidence.models[f"{MODEL}/2"] = ModelFiles("signature:\n  inputs: '[not json'\n", None)
    post_evidence(svc, MODEL, "2")
    [text] = reply_texts(svc)
    assert ":warning: signature unreadable: the signature's inputs are not JSON" in text


def test_an_alias_bomb_in_mlmodel_is_one_line_and_the_rest_goes_on(svc):
    levels = "\n".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 6))
    bomb = f"l0: &l0 [{{type: object, properties: {{a: {{type: long}}}}}}]\n{levels}\n"
    svc.evidence.models[f"{MODEL}/2"] = ModelFiles(bomb + "signature:\n  inputs: *l5\n", None)
    post_evidence(svc, MODEL, "2")
    [text] = reply_texts(svc)
    warning = ":warning: signature unreadable: MLmodel uses YAML aliases, which MLflow never writes"
    assert warning in text and len(text) < 4000
    assert "Below: `confusion_matrix.png`, `plots/roc.png`, the metric trend." in text


def test_a_wide_schema_change_fits_a_section_with_a_link(svc):
    svc.settings = svc.settings.__class__(**{**svc.settings.__dict__, "mlflow_ui_url": "http://ui"})
    wide = {f"column_{i:04d}": "double" for i in range(600)}
    svc.evidence.models[f"{MODEL}/1"] = ModelFiles(mlmodel(wide), None)
    post_evidence(svc, MODEL, "2")
    [text] = reply_texts(svc)
    assert len(text) <= SECTION_TEXT
    assert "more (<http://ui/#/models/churn/versions/2|the rest in MLflow>)" in text


def test_evidence_off_or_no_notice_does_nothing():
    svc = fake_services(policy="defaults:\n  evidence: null\n")
    svc.evidence, svc.uploads = FakeEvidence(), FakeUploads()
    svc.gateway.register_elsewhere(MODEL, "r1")
    assert post_evidence(svc, MODEL, "1") == "off"
    on = fake_services()
    on.evidence, on.uploads = FakeEvidence(), FakeUploads()
    on.gateway.register_elsewhere(MODEL, "r1")
    assert post_evidence(on, MODEL, "1") == "no_notice"
    assert svc.notifier.replies == on.notifier.replies == []


def test_the_notice_queues_its_evidence_and_a_failure_to_queue_never_stops_it():
    svc = fake_services()
    queued = []
    svc.after_notice = lambda mv: queued.append((mv.version, mv.tag("notice_ts")))
    svc.gateway.add_run("r1", {"accuracy": 0.9})
    event = TrainingEvent(MODEL, "r1", requested_by="UREQUESTER")
    result = lifecycle.stage_training_event(svc, event, event_id="e1")
    assert result.outcome == "noticed" and queued == [("1", result.notice_ts)]
    # Delivered again before its evidence was shown: queued again (the task runs once).
    lifecycle.stage_training_event(svc, event, event_id="e1")
    assert len(queued) == 2

    def broken(mv):
        raise ConnectionError("redis down")

    svc.after_notice = broken
    svc.gateway.add_run("r2", {"accuracy": 0.9})
    other = TrainingEvent(MODEL, "r2", requested_by="UREQUESTER")
    assert lifecycle.stage_training_event(svc, other, event_id="e2").outcome == "noticed"
    assert len(svc.notifier.posts) == 2


def test_names_from_the_run_and_the_model_are_escaped(svc):
    svc.evidence.models[f"{MODEL}/2"] = ModelFiles(
        mlmodel({"<!channel>": "double", "a": "double", "b": "long"}),
        "numpy==1.26.0\nscikit-learn\n",
    )
    svc.evidence.runs["r2"] = {"<@U123>.png": b"not a picture", "<!here>.png": PICTURE}
    post_evidence(svc, MODEL, "2")
    [text] = reply_texts(svc)
    assert "added input `&lt;!channel&gt;` (double)" in text
    assert "`&lt;@U123&gt;.png` is not a PNG or JPEG picture" in text
    assert "`&lt;!here&gt;.png`" in text
    assert "<!" not in text and "<@" not in text


def test_data_no_rule_foresaw_is_one_line_not_a_failed_task(svc):
    def broken(name, count):
        raise KeyError("metrics")

    svc.evidence.trend = broken
    assert post_evidence(svc, MODEL, "2") == "shown"
    [text] = reply_texts(svc)
    assert text.splitlines()[1] == ":warning: the evidence could not be read (KeyError: 'metrics')"
    assert svc.uploads.shared == []


def test_evidence_waits_while_slack_slows_the_channel_down_so_notices_go_first(svc):
    svc.uploads.busy_channels.add("CNOTICES")
    with pytest.raises(ChannelBusy, match="CNOTICES"):
        post_evidence(svc, MODEL, "2")
    assert reply_texts(svc) == [] and svc.uploads.started == {}
    assert not svc.gateway.get_version(MODEL, "2").tag("evidence")
    svc.uploads.busy_channels.clear()
    assert post_evidence(svc, MODEL, "2") == "shown"
    assert len(reply_texts(svc)) == 1 and len(svc.uploads.shared) == 3


def test_evidence_that_has_waited_long_enough_takes_its_turn_in_a_busy_channel(svc):
    svc.uploads.busy_channels.add("CNOTICES")  # a channel Slack never stops slowing down
    assert post_evidence(svc, MODEL, "2", patient=False) == "shown"
    assert len(reply_texts(svc)) == 1 and len(svc.uploads.shared) == 3
