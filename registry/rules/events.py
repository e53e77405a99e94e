"""Inbound events: signature checks and parsing, with no I/O."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1024 * 1024
CREATED_BY_TAG = "registry_bot.created_by"

# Every inbound pattern is applied with `fullmatch`: `$` would match before a final newline,
# and "U123ABC\n" is another user than U123ABC, "churn\n" another model than churn.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ARTIFACT_PATH = re.compile(r"(?!/)(?!.*\.\.)[A-Za-z0-9_.\-/]{1,255}")
_MODEL_URI = re.compile(r"[a-z][a-z0-9+.-]*:/\S{1,1000}")
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")  # a Slack user ID
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]+")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")
_ALIAS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")
# One entry of a signature header, `v1,<base64>` (Standard Webhooks; `v1a` is its ed25519 one).
_SIGNATURE_ENTRY = re.compile(r"v[0-9]+a?,([A-Za-z0-9+/]+={0,2})")
# RFC 3339 as Alertmanager writes it (Go's time.Time: up to nanoseconds).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
ALERT_STATUSES = ("firing", "resolved")
ALERTMANAGER_VERSION = "4"
ALERT_TEXT_LIMIT = 2000  # characters of a label or annotation the guard keeps


class SignatureError(ValueError):
    """The request is not signed by a sender we trust."""


class InvalidEvent(ValueError):
    """The body is not an event we accept; `details` names each bad field."""

    def __init__(self, message: str, details: Sequence[str] = ()):
        super().__init__(message)
        self.details = list(details)


@dataclass(frozen=True)
class TaskArguments:
    """A dataclass of primitives that a door hands to a task as its keyword arguments."""

    def as_kwargs(self) -> dict[str, Any]:
        """Return primitives for a task's keyword arguments."""
        return asdict(self)


@dataclass(frozen=True)
class TrainingEvent(TaskArguments):
    """A training run finished and its model should become a version (SPEC section 5)."""

    model_name: str
    run_id: str
    artifact_path: str = "model"
    model_uri: str = ""
    requested_by: str = ""
    description: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionCreated:
    """MLflow's `model_version.created` webhook payload, as far as we use it."""

    model_name: str
    version: str
    run_id: str
    source: str
    created_by_us: bool


@dataclass(frozen=True)
class AliasChanged:
    """MLflow's `model_version_alias.created` / `.deleted` payload: an alias moved or went."""

    model_name: str
    alias: str
    version: str  # "" when the alias was deleted
    action: str  # "created" or "deleted"


@dataclass(frozen=True)
class CanaryVerdict(TaskArguments):
    """A canary's verdict on a version in its canary window (SPEC section 7)."""

    model_name: str
    version: str
    passed: bool
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class Alert:
    """One alert of an Alertmanager notification, as Alertmanager sent it (SPEC section 12)."""

    status: str
    fingerprint: str
    starts_at: str
    ends_at: str = ""
    generator_url: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelAlert(TaskArguments):
    """An alert about one registered model: what the guard task receives, as primitives."""

    model_name: str
    status: str
    fingerprint: str
    starts_at: str
    ends_at: str = ""
    alertname: str = ""
    summary: str = ""
    description: str = ""
    generator_url: str = ""
    version: str = ""


def model_alert(alert: Alert, model_label: str) -> ModelAlert | None:
    """Return the alert as one about the model its `model_label` names, or None if none."""
    name = alert.labels.get(model_label, "")
    if not MODEL_NAME.fullmatch(name):
        return None
    notes = alert.annotations
    return ModelAlert(
        model_name=name,
        status=alert.status,
        fingerprint=alert.fingerprint,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        alertname=alert.labels.get("alertname", ""),
        summary=notes.get("summary", ""),
        description=notes.get("description", ""),
        generator_url=alert.generator_url,
        version=alert.labels.get("version", ""),
    )


def signed_headers(secret: str, msg_id: str, body: str) -> dict[str, str]:
    """Return the headers that sign `body` per Standard Webhooks, timestamped now."""
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }


def verify_standard_webhook(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> str:
    """Check a Standard Webhooks signature against any of `secrets`; return the webhook id.

    Several secrets are allowed so a sender can rotate keys without downtime.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    if not (msg_id and lowered.get("webhook-timestamp") and lowered.get("webhook-signature")):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(msg_id) > 256:
        raise SignatureError("webhook-id is longer than 256 characters")
    # Checked here, not left to standardwebhooks: its versions disagree on a malformed entry
    # (older ones raise, 1.3 finds no match), and handing on only the well-formed entries
    # gets the same answer from every version.
    signatures = _well_formed_signatures(lowered["webhook-signature"])
    if not signatures:
        raise SignatureError("malformed webhook-signature header")
    lowered["webhook-signature"] = signatures
    text = _text(body)
    last = "no matching signature"
    for secret in secrets:
        try:
            Webhook(secret).verify(text, lowered, json_parse=False)
            return msg_id
        except WebhookVerificationError as exc:
            last = _reason(exc)
            if "timestamp" in last:
                break  # the same for every secret: no point trying the others
        except (ValueError, binascii.Error):
            last = "malformed webhook-signature header"
    raise SignatureError(last)


def verify_mlflow_webhook(headers: Mapping[str, str], body: bytes, secret: str) -> str:
    """Check MLflow's own webhook signature; return the delivery id.

    MLflow signs "{delivery_id}.{timestamp}.{body}" exactly like Standard Webhooks
    but keys the HMAC with the raw secret rather than a base64 `whsec_` key.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    mapped = {
        "webhook-id": lowered.get("x-mlflow-delivery-id", ""),
        "webhook-timestamp": lowered.get("x-mlflow-timestamp", ""),
        "webhook-signature": lowered.get("x-mlflow-signature", ""),
    }
    if not all(mapped.values()):
        raise SignatureError(
            "missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature header"
        )
    signatures = _well_formed_signatures(mapped["webhook-signature"])  # as above
    if not signatures:
        raise SignatureError("malformed X-MLflow-Signature header")
    mapped["webhook-signature"] = signatures
    text = _text(body)
    try:
        Webhook(secret.encode()).verify(text, mapped, json_parse=False)
    except WebhookVerificationError as exc:
        raise SignatureError(_reason(exc)) from None
    except (ValueError, binascii.Error):
        raise SignatureError("malformed X-MLflow-Signature header") from None
    return mapped["webhook-id"]


def verify_bearer(headers: Mapping[str, str], token: str) -> None:
    """Check `Authorization: Bearer <token>` in constant time; raise SignatureError if not."""
    lowered = {k.lower(): v for k, v in headers.items()}
    scheme, _, given = lowered.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise SignatureError("missing Authorization: Bearer header")
    # compare_digest takes as long for a near miss as for a wild guess.
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise SignatureError("wrong bearer token")


def parse_alertmanager(body: bytes) -> list[Alert]:
    """Parse Alertmanager's webhook payload (version 4), naming every bad field."""
    data = _json_object(body)
    problems: list[str] = []
    if data.get("version") != ALERTMANAGER_VERSION:
        problems.append(f'version: must be "{ALERTMANAGER_VERSION}" (Alertmanager\'s webhook)')
    for name in ("groupKey", "receiver"):
        if not isinstance(data.get(name), str):
            problems.append(f"{name}: required, a string")
    if data.get("status") not in ALERT_STATUSES:
        problems.append("status: must be firing or resolved")
    raw = data.get("alerts")
    if not isinstance(raw, list):
        problems.append("alerts: required, a list")
        raw = []
    alerts = [_alert(item, f"alerts[{i}]", problems) for i, item in enumerate(raw)]
    if problems:
        raise InvalidEvent("not an Alertmanager webhook payload", problems[:20])
    return [alert for alert in alerts if alert is not None]


def _alert(item: Any, where: str, problems: list[str]) -> Alert | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: must be an object")
        return None
    before = len(problems)
    status = item.get("status")
    if status not in ALERT_STATUSES:
        problems.append(f"{where}.status: must be firing or resolved")
    fingerprint = item.get("fingerprint")
    if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= 128:
        problems.append(f"{where}.fingerprint: required, a string of at most 128 characters")
    starts_at = _timestamp(item, "startsAt", where, problems, required=True)
    ends_at = _timestamp(item, "endsAt", where, problems, required=False)
    url = item.get("generatorURL", "")
    if not isinstance(url, str):
        problems.append(f"{where}.generatorURL: must be a string")
    labels = _strings(item, "labels", where, problems, required=True)
    annotations = _strings(item, "annotations", where, problems, required=False)
    if len(problems) > before:
        return None
    return Alert(str(status), str(fingerprint), starts_at, ends_at, str(url), labels, annotations)


def _timestamp(item: dict, name: str, where: str, problems: list[str], *, required: bool) -> str:
    value = item.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        problems.append(f"{where}.{name}: {'required, ' if required else ''}an RFC 3339 time")
        return ""
    return value


def _strings(
    item: dict, name: str, where: str, problems: list[str], *, required: bool
) -> dict[str, str]:
    value = item.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        problems.append(f"{where}.{name}: {'required, ' if required else ''}an object of strings")
        return {}
    return {str(k): v[:ALERT_TEXT_LIMIT] for k, v in value.items()}


def parse_training_event(body: bytes) -> TrainingEvent:
    """Parse and validate a training-completion event, naming every bad field."""
    data = _json_object(body)
    problems: list[str] = []
    model_name = _required(data, "model_name", MODEL_NAME, problems)
    run_id = _required(data, "run_id", _RUN_ID, problems)
    artifact_path = _optional(data, "artifact_path", _ARTIFACT_PATH, problems) or "model"
    model_uri = _optional(data, "model_uri", _MODEL_URI, problems)
    requested_by = _requester(data, problems)
    metrics = _metrics(data, problems)
    description = _description(data, problems)
    if problems:
        raise InvalidEvent("invalid training event", problems)
    return TrainingEvent(
        model_name,
        run_id,
        artifact_path=artifact_path,
        model_uri=model_uri,
        requested_by=requested_by,
        description=description,
        metrics=metrics,
    )


def parse_canary_event(body: bytes) -> CanaryVerdict:
    """Parse and validate a canary verdict, naming every bad field."""
    data = _json_object(body)
    problems: list[str] = []
    model_name = _required(data, "model_name", MODEL_NAME, problems)
    raw = data.get("version")
    if isinstance(raw, int) and not isinstance(raw, bool):
        data = {**data, "version": str(raw)}  # a number is as good as its digits
    version = _required(data, "version", _VERSION, problems)
    passed = data.get("passed")
    if not isinstance(passed, bool):
        problems.append("passed: required, true or false")
    metrics = _metrics(data, problems)
    detail = _description({"description": data.get("detail")}, problems)
    if problems:
        raise InvalidEvent(
            "invalid canary verdict", [p.replace("description", "detail") for p in problems]
        )
    return CanaryVerdict(model_name, version, bool(passed), metrics, detail)


def _mlflow_data(data: dict[str, Any]) -> dict[str, Any]:
    """Return an MLflow webhook's `data` object, or refuse the body."""
    payload = data.get("data")
    if not isinstance(payload, dict):
        raise InvalidEvent("invalid MLflow event", ["data: must be an object"])
    return payload


def parse_mlflow_event(body: bytes) -> VersionCreated | None:
    """Return the created version from an MLflow webhook body, or None for other events."""
    data = _json_object(body)
    if (data.get("entity"), data.get("action")) != ("model_version", "created"):
        return None
    payload = _mlflow_data(data)
    problems: list[str] = []
    name = _required(payload, "name", MODEL_NAME, problems)
    version = _required(payload, "version", _VERSION, problems)
    if problems:
        raise InvalidEvent("invalid MLflow event", [f"data.{p}" for p in problems])
    tags = payload.get("tags")
    tags = tags if isinstance(tags, dict) else {}
    return VersionCreated(
        model_name=name,
        version=version,
        run_id=str(payload.get("run_id") or ""),
        source=str(payload.get("source") or ""),
        created_by_us=CREATED_BY_TAG in tags,
    )


def parse_mlflow_alias_event(body: bytes) -> AliasChanged | None:
    """Return the alias change from an MLflow webhook body, or None for other events."""
    data = _json_object(body)
    action = data.get("action")
    if data.get("entity") != "model_version_alias" or action not in ("created", "deleted"):
        return None
    payload = _mlflow_data(data)
    problems: list[str] = []
    name = _required(payload, "name", MODEL_NAME, problems)
    alias = _required(payload, "alias", _ALIAS_NAME, problems)
    version = ""
    if action == "created":
        version = _required(
            {**payload, "version": str(payload.get("version") or "")}, "version", _VERSION, problems
        )
    if problems:
        raise InvalidEvent("invalid MLflow event", [f"data.{p}" for p in problems])
    return AliasChanged(model_name=name, alias=alias, version=version, action=str(action))


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        # JSON is UTF-8 (RFC 8259): whoever signed it, this is no event of ours.
        raise InvalidEvent("body is not valid JSON (not UTF-8)") from None


def _well_formed_signatures(header: str) -> str:
    """Return the header's well-formed `v<n>,<base64>` entries, space-separated; "" if none."""
    kept = []
    for entry in header.split(" "):
        match = _SIGNATURE_ENTRY.fullmatch(entry)
        if match is None:
            continue
        try:
            base64.b64decode(match[1], validate=True)
        except binascii.Error:  # a wrong length or padding the pattern lets through
            continue
        kept.append(entry)
    return " ".join(kept)


def _reason(exc: WebhookVerificationError) -> str:
    text = str(exc).lower()
    if "too old" in text:
        return "webhook-timestamp is too old (more than 5 minutes)"
    if "too new" in text:
        return "webhook-timestamp is in the future (more than 5 minutes)"
    if "header" in text:
        return "malformed webhook-timestamp header"
    return "no matching signature"


def _json_object(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidEvent("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidEvent("body must be a JSON object")
    return data


def _required(data: dict, name: str, pattern: re.Pattern, problems: list[str]) -> str:
    value = data.get(name)
    if value is None or value == "":
        problems.append(f"{name}: required")
        return ""
    return _checked(value, name, pattern, problems)


def _optional(data: dict, name: str, pattern: re.Pattern, problems: list[str]) -> str:
    value = data.get(name)
    if value is None or value == "":
        return ""
    return _checked(value, name, pattern, problems)


def _checked(value: Any, name: str, pattern: re.Pattern, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"{name}: must be a string")
        return ""
    if not pattern.fullmatch(value):
        problems.append(f"{name}: malformed ({value[:80]!r})")
        return ""
    return value


def _requester(data: dict, problems: list[str]) -> str:
    value = data.get("requested_by")
    if value is None or value == "":
        return ""
    if isinstance(value, str) and (USER_ID.fullmatch(value) or _EMAIL.fullmatch(value)):
        return value
    problems.append("requested_by: must be a Slack user ID (U…) or an e-mail address")
    return ""


def _metrics(data: dict, problems: list[str]) -> dict[str, float]:
    value = data.get("metrics")
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 200:
        problems.append("metrics: must be an object of at most 200 name: number pairs")
        return {}
    numbers = {k: _finite(v) for k, v in value.items()}
    bad = [k for k, v in numbers.items() if len(k) > 250 or v is None]
    if bad:
        problems.append(f"metrics: values must be finite numbers (bad: {', '.join(bad[:10])})")
        return {}
    return {k: v for k, v in numbers.items() if v is not None}


def _finite(value: Any) -> float | None:
    """Return a JSON number as a finite float, or None (a bool, a string, NaN, or an integer
    too large for any float, which JSON allows)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _description(data: dict, problems: list[str]) -> str:
    value = data.get("description")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 5000:
        problems.append("description: must be a string of at most 5000 characters")
        return ""
    return value
