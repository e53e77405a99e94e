"""Signature checks and event parsing: pure functions, tested by equality."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from registry.rules.events import (
    Alert,
    InvalidEvent,
    ModelAlert,
    SignatureError,
    TrainingEvent,
    model_alert,
    parse_alertmanager,
    parse_canary_event,
    parse_mlflow_alias_event,
    parse_mlflow_event,
    parse_training_event,
    verify_bearer,
    verify_mlflow_webhook,
    verify_standard_webhook,
)
from tests.support import TRAINING_SECRET, alert, alertmanager_payload, signed_headers, stamp

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-thirty-two-byt").decode()
BODY = json.dumps({"model_name": "churn", "run_id": "abc123"}).encode()


def test_valid_signature_returns_the_webhook_id():
    headers = signed_headers(BODY, msg_id="msg_1")
    assert verify_standard_webhook(headers, BODY, [TRAINING_SECRET]) == "msg_1"


def test_any_of_several_secrets_verifies_during_rotation():
    headers = signed_headers(BODY, secret=OTHER_SECRET)
    assert verify_standard_webhook(headers, BODY, [TRAINING_SECRET, OTHER_SECRET])


def test_header_with_old_and_new_signatures_verifies():
    old = signed_headers(BODY, secret=OTHER_SECRET, msg_id="m", at=1000 + time.time())
    new = signed_headers(BODY, secret=TRAINING_SECRET, msg_id="m", at=1000 + time.time())
    both = {**new, "webhook-signature": old["webhook-signature"] + " " + new["webhook-signature"]}
    with pytest.raises(SignatureError):  # 1000 s ahead: too new, whatever the signatures
        verify_standard_webhook(both, BODY, [TRAINING_SECRET])
    now_old = signed_headers(BODY, secret=OTHER_SECRET, msg_id="m")
    now_new = signed_headers(BODY, secret=TRAINING_SECRET, msg_id="m")
    sigs = now_old["webhook-signature"] + " " + now_new["webhook-signature"]
    assert verify_standard_webhook({**now_new, "webhook-signature": sigs}, BODY, [TRAINING_SECRET])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: ({**h, "webhook-signature": "v1,AAAA"}, b), "no matching signature"),
        (lambda h, b: ({**h, "webhook-signature": "garbage"}, b), "malformed"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing"),
        (lambda h, b: (h, b + b" "), "no matching signature"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "malformed webhook-timestamp"),
    ],
)
def test_bad_signatures_are_refused(mutate, reason):
    headers, body = mutate(signed_headers(BODY), BODY)
    with pytest.raises(SignatureError, match=reason):
        verify_standard_webhook(headers, body, [TRAINING_SECRET])


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("garbage", id="no comma"),
        pytest.param(" ", id="empty entry"),
        pytest.param("v1,", id="empty signature"),
        pytest.param("v1,AAA", id="bad base64 padding"),
        pytest.param("v1,AA!A", id="bad base64 alphabet"),
        pytest.param("sig,AAAA", id="no version"),
        pytest.param("v1,AAAA,AAAA", id="two commas"),
        pytest.param("garbage v1, v1,AA=A", id="no entry well-formed"),
    ],
)
def test_a_malformed_signature_header_is_named_whatever_the_library_says(header):
    headers = {**signed_headers(BODY), "webhook-signature": header}
    with pytest.raises(SignatureError, match="^malformed webhook-signature header$"):
        verify_standard_webhook(headers, BODY, [TRAINING_SECRET])


def test_malformed_entries_beside_a_well_formed_one_are_passed_over():
    headers = signed_headers(BODY, msg_id="msg_1")
    good = headers["webhook-signature"]
    mixed = {**headers, "webhook-signature": f"garbage  v1, {good} v1,AA=A"}
    assert verify_standard_webhook(mixed, BODY, [TRAINING_SECRET]) == "msg_1"
    wrong = {**headers, "webhook-signature": "garbage v1,AAAA"}
    with pytest.raises(SignatureError, match="no matching signature"):
        verify_standard_webhook(wrong, BODY, [TRAINING_SECRET])


def test_wrong_secret_is_refused():
    with pytest.raises(SignatureError, match="no matching signature"):
        verify_standard_webhook(signed_headers(BODY, secret=OTHER_SECRET), BODY, [TRAINING_SECRET])


@pytest.mark.parametrize(("offset", "ok"), [(-301, False), (-299, True), (299, True), (301, False)])
def test_timestamp_tolerance_is_five_minutes_both_ways(offset, ok):
    headers = signed_headers(BODY, at=stamp(offset, within=ok))
    if ok:
        assert verify_standard_webhook(headers, BODY, [TRAINING_SECRET])
    else:
        with pytest.raises(SignatureError, match="too old" if offset < 0 else "future"):
            verify_standard_webhook(headers, BODY, [TRAINING_SECRET])


def _mlflow_headers(body: bytes, secret: str, delivery: str = "d-1", ts: int | None = None):
    ts = ts or int(time.time())
    mac = hmac.new(secret.encode(), f"{delivery}.{ts}.{body.decode()}".encode(), hashlib.sha256)
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": str(ts),
        "X-MLflow-Signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }


def test_mlflow_signature_is_keyed_with_the_raw_secret():
    assert verify_mlflow_webhook(_mlflow_headers(BODY, "s3cret"), BODY, "s3cret") == "d-1"
    with pytest.raises(SignatureError):
        verify_mlflow_webhook(_mlflow_headers(BODY, "forged"), BODY, "s3cret")
    with pytest.raises(SignatureError, match="missing"):
        verify_mlflow_webhook({}, BODY, "s3cret")


@pytest.mark.parametrize("header", ["garbage", "v1,", "v1,AAA"])
def test_a_malformed_mlflow_signature_header_is_named(header):
    headers = {**_mlflow_headers(BODY, "s3cret"), "X-MLflow-Signature": header}
    with pytest.raises(SignatureError, match="^malformed X-MLflow-Signature header$"):
        verify_mlflow_webhook(headers, BODY, "s3cret")


def test_training_event_defaults():
    event = parse_training_event(BODY)
    assert event == TrainingEvent(model_name="churn", run_id="abc123", artifact_path="model")


def test_training_event_full():
    body = {
        "model_name": "churn",
        "run_id": "4f0c",
        "artifact_path": "clf",
        "model_uri": "models:/m-1",
        "requested_by": "rita@example.com",
        "metrics": {"accuracy": 0.93, "n": 3},
        "description": "nightly",
        "unknown": "ignored",
    }
    event = parse_training_event(json.dumps(body).encode())
    assert event.metrics == {"accuracy": 0.93, "n": 3.0}
    assert (event.artifact_path, event.model_uri, event.requested_by) == (
        "clf",
        "models:/m-1",
        "rita@example.com",
    )


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["model_name", "run_id"]),
        ({"model_name": "churn"}, ["run_id"]),
        ({"model_name": 5, "run_id": "r"}, ["model_name"]),
        ({"model_name": "bad name", "run_id": "r"}, ["model_name"]),
        ({"model_name": "c", "run_id": "r", "artifact_path": "../etc"}, ["artifact_path"]),
        ({"model_name": "c", "run_id": "r", "requested_by": "someone"}, ["requested_by"]),
        ({"model_name": "c", "run_id": "r", "metrics": {"a": "high"}}, ["metrics"]),
        ({"model_name": "c", "run_id": "r", "metrics": {"a": True}}, ["metrics"]),
        ({"model_name": "c", "run_id": "r", "metrics": [1]}, ["metrics"]),
        ({"model_name": "c", "run_id": "r", "description": 7}, ["description"]),
        ({"model_name": "c", "run_id": "r", "model_uri": "no scheme"}, ["model_uri"]),
        # `$` matches before a final newline: every pattern must hold the whole string.
        ({"model_name": "churn\n", "run_id": "r"}, ["model_name"]),
        ({"model_name": "c", "run_id": "r\n"}, ["run_id"]),
        ({"model_name": "c", "run_id": "r", "artifact_path": "model\n"}, ["artifact_path"]),
        ({"model_name": "c", "run_id": "r", "model_uri": "models:/m-1\n"}, ["model_uri"]),
        ({"model_name": "c", "run_id": "r", "requested_by": "U123ABC\n"}, ["requested_by"]),
        ({"model_name": "c", "run_id": "r", "requested_by": "a@b.co\n"}, ["requested_by"]),
        # Larger than any float: a 400 naming the field, never a crash.
        ({"model_name": "c", "run_id": "r", "metrics": {"a": 10**400}}, ["metrics"]),
        ({"model_name": "c", "run_id": "r", "metrics": {"a": -(10**309)}}, ["metrics"]),
    ],
)
def test_invalid_fields_are_each_named(body, fields):
    with pytest.raises(InvalidEvent) as caught:
        parse_training_event(json.dumps(body).encode())
    named = [d.split(":")[0] for d in caught.value.details]
    assert named == fields


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_name": "churn\n", "version": "3", "passed": True}, "model_name"),
        ({"model_name": "churn", "version": "3\n", "passed": True}, "version"),
        ({"model_name": "churn", "version": 10**400, "passed": True}, "version"),
        ({"model_name": "c", "version": "3", "passed": True, "metrics": {"x": 10**400}}, "metrics"),
    ],
)
def test_a_canary_verdict_names_each_bad_field(body, field):
    with pytest.raises(InvalidEvent) as caught:
        parse_canary_event(json.dumps(body).encode())
    assert [d.split(":")[0] for d in caught.value.details] == [field]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "churn\n", "version": "3"}, "data.name"),
        ({"name": "c", "version": "3\n"}, "data.version"),
    ],
)
def test_an_mlflow_delivery_with_a_trailing_newline_is_refused(data, field):
    body = json.dumps({"entity": "model_version", "action": "created", "data": data}).encode()
    with pytest.raises(InvalidEvent) as caught:
        parse_mlflow_event(body)
    assert [d.split(":")[0] for d in caught.value.details] == [field]
    alias = {"name": data["name"], "alias": "production\n", "version": data["version"]}
    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": alias})
    with pytest.raises(InvalidEvent, match="invalid MLflow event"):
        parse_mlflow_alias_event(body.encode())


def test_an_alert_whose_model_label_ends_in_a_newline_names_no_model():
    found = Alert("firing", "f1", "2026-01-01T00:00:00Z", labels={"model": "churn\n"})
    assert model_alert(found, "model") is None


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b'{"metrics": NaN}'])
def test_non_objects_are_refused(raw):
    with pytest.raises(InvalidEvent):
        parse_training_event(raw)


def test_mlflow_version_created_is_parsed_and_others_ignored():
    created = {
        "entity": "model_version",
        "action": "created",
        "data": {
            "name": "churn",
            "version": "4",
            "run_id": "r",
            "source": "models:/m-1",
            "tags": {},
        },
    }
    parsed = parse_mlflow_event(json.dumps(created).encode())
    assert (parsed.model_name, parsed.version, parsed.created_by_us) == ("churn", "4", False)
    ours = {**created, "data": {**created["data"], "tags": {"registry_bot.created_by": "x"}}}
    assert parse_mlflow_event(json.dumps(ours).encode()).created_by_us
    tag_set = {"entity": "model_version_tag", "action": "set", "data": {}}
    assert parse_mlflow_event(json.dumps(tag_set).encode()) is None
    with pytest.raises(InvalidEvent, match="invalid MLflow event"):
        parse_mlflow_event(json.dumps({**created, "data": {"name": "churn"}}).encode())


def test_a_body_that_is_not_utf8_is_no_event_whoever_signed_it():
    body = b"\xff\xfe{}"
    with pytest.raises(InvalidEvent, match="not UTF-8"):
        verify_standard_webhook(signed_headers(body), body, [TRAINING_SECRET])


# -- Alertmanager ------------------------------------------------------------------------

TOKEN = "a-long-random-token-1234"


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "])
def test_the_right_bearer_token_passes(header):
    verify_bearer({"Authorization": header}, TOKEN)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Authorization: Bearer"),
        ({"Authorization": TOKEN}, "missing Authorization: Bearer"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing Authorization: Bearer"),
        ({"Authorization": "Bearer "}, "missing Authorization: Bearer"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong bearer token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong bearer token"),
        ({"Authorization": "Bearer tökén"}, "wrong bearer token"),
    ],
)
def test_a_missing_or_wrong_bearer_token_is_refused(headers, reason):
    with pytest.raises(SignatureError, match=reason):
        verify_bearer(headers, TOKEN)


def test_an_alertmanager_payload_is_parsed_alert_by_alert():
    firing = alert("churn", fingerprint="f1", starts_at="2026-01-02T03:04:05.123456789Z")
    body = json.dumps(alertmanager_payload(firing)).encode()
    [parsed] = parse_alertmanager(body)
    assert parsed == Alert(
        status="firing",
        fingerprint="f1",
        starts_at="2026-01-02T03:04:05.123456789Z",
        ends_at="0001-01-01T00:00:00Z",
        generator_url=firing["generatorURL"],
        labels=firing["labels"],
        annotations=firing["annotations"],
    )
    assert model_alert(parsed, "model") == ModelAlert(
        model_name="churn",
        status="firing",
        fingerprint="f1",
        starts_at="2026-01-02T03:04:05.123456789Z",
        ends_at="0001-01-01T00:00:00Z",
        alertname="PredictionErrorRate",
        summary="More than 5% of predictions fail",
        description="Error rate over the last 5 minutes",
        generator_url=firing["generatorURL"],
    )


def test_an_alert_names_its_model_by_the_configured_label_and_may_name_a_version():
    [parsed] = parse_alertmanager(
        json.dumps(alertmanager_payload(alert("fraud", label="served", version="7"))).encode()
    )
    assert model_alert(parsed, "model") is None
    named = model_alert(parsed, "served")
    assert named is not None and (named.model_name, named.version) == ("fraud", "7")
    odd = Alert("firing", "f", "2026-01-01T00:00:00Z", labels={"model": "no such/name"})
    assert model_alert(odd, "model") is None


def test_an_empty_alert_list_is_a_payload_with_nothing_in_it():
    assert parse_alertmanager(json.dumps(alertmanager_payload()).encode()) == []


def _without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


GOOD_ALERT = alert("churn", fingerprint="f1", starts_at="2026-01-02T03:04:05Z")


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (lambda p: {**p, "version": "3"}, ["version"]),
        (lambda p: {**p, "version": 4}, ["version"]),
        (lambda p: _without(p, "groupKey"), ["groupKey"]),
        (lambda p: _without(p, "receiver"), ["receiver"]),
        (lambda p: {**p, "status": "pending"}, ["status"]),
        (lambda p: _without(p, "alerts"), ["alerts"]),
        (lambda p: {**p, "alerts": {"0": GOOD_ALERT}}, ["alerts"]),
        (lambda p: {**p, "alerts": ["x"]}, ["alerts[0]"]),
        (
            lambda p: {**p, "alerts": [GOOD_ALERT, _without(GOOD_ALERT, "fingerprint")]},
            ["alerts[1].fingerprint"],
        ),
        (lambda p: {**p, "alerts": [{**GOOD_ALERT, "status": "ok"}]}, ["alerts[0].status"]),
        (lambda p: {**p, "alerts": [_without(GOOD_ALERT, "startsAt")]}, ["alerts[0].startsAt"]),
        (lambda p: {**p, "alerts": [{**GOOD_ALERT, "startsAt": "today"}]}, ["alerts[0].startsAt"]),
        (lambda p: {**p, "alerts": [{**GOOD_ALERT, "endsAt": 0}]}, ["alerts[0].endsAt"]),
        (lambda p: {**p, "alerts": [_without(GOOD_ALERT, "labels")]}, ["alerts[0].labels"]),
        (lambda p: {**p, "alerts": [{**GOOD_ALERT, "labels": {"a": 1}}]}, ["alerts[0].labels"]),
        (
            lambda p: {**p, "alerts": [{**GOOD_ALERT, "annotations": []}]},
            ["alerts[0].annotations"],
        ),
        (
            lambda p: {**p, "alerts": [{**GOOD_ALERT, "generatorURL": 5}]},
            ["alerts[0].generatorURL"],
        ),
        (
            lambda p: {"model_name": "churn", "run_id": "r"},
            ["version", "groupKey", "receiver", "status", "alerts"],
        ),
    ],
)
def test_a_payload_that_is_not_alertmanagers_names_each_bad_field(change, fields):
    body = json.dumps(change(alertmanager_payload(GOOD_ALERT))).encode()
    with pytest.raises(InvalidEvent, match="not an Alertmanager webhook payload") as caught:
        parse_alertmanager(body)
    assert [d.split(":")[0] for d in caught.value.details] == fields


@pytest.mark.parametrize("raw", [b"not json", b"[]", b"\xff"])
def test_an_alertmanager_body_that_is_no_json_object_is_refused(raw):
    with pytest.raises(InvalidEvent):
        parse_alertmanager(raw)
