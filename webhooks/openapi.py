"""The OpenAPI description of the webhooks API, served at /openapi.json and kept true by tests."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
ACCEPTED = {"$ref": "#/components/schemas/Accepted"}
SIGNED = [{"$ref": f"#/components/parameters/{name}"} for name in ("id", "timestamp", "signature")]
MLFLOW_SIGNED = [
    {"$ref": f"#/components/parameters/{name}"}
    for name in ("mlflowDelivery", "mlflowTimestamp", "mlflowSignature")
]


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _answers(**codes: tuple[str, dict | None]) -> dict:
    out = {}
    for code, (description, schema) in codes.items():
        out[code.lstrip("_")] = {"description": description, **(_json(schema) if schema else {})}
    return out


REFUSALS = {
    "_400": ("Not JSON, or missing or malformed fields (each named in details)", ERROR),
    "_401": ("Missing, malformed or wrong signature; stale or future timestamp", ERROR),
    "_413": ("Body larger than 1 MiB", ERROR),
    "_415": ("Content-Type is not application/json", ERROR),
    "_503": ("The queue (Redis) cannot take the event; retry later", ERROR),
}

TRAINING_EVENT = {
    "type": "object",
    "required": ["model_name", "run_id"],
    "properties": {
        "model_name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"},
        "run_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "artifact_path": {"type": "string", "default": "model"},
        "model_uri": {"type": "string"},
        "requested_by": {"type": "string", "description": "Slack user ID or e-mail"},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "description": {"type": "string", "maxLength": 5000},
    },
}

CANARY_VERDICT = {
    "type": "object",
    "required": ["model_name", "version", "passed"],
    "properties": {
        "model_name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"},
        "version": {"type": "string", "pattern": "^[1-9][0-9]{0,9}$"},
        "passed": {"type": "boolean"},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "detail": {"type": "string", "maxLength": 5000},
    },
}

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_TIME = {"type": "string", "format": "date-time"}
ALERT = {
    "type": "object",
    "required": ["status", "labels", "startsAt", "fingerprint"],
    "properties": {
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "labels": {
            **_STRINGS,
            "description": "`model` (ALERT_MODEL_LABEL) names the model; `version` may name one",
        },
        "annotations": {**_STRINGS, "description": "`summary` or `description` is shown"},
        "startsAt": _TIME,
        "endsAt": _TIME,
        "generatorURL": {"type": "string"},
        "fingerprint": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}
ALERTMANAGER_PAYLOAD = {
    "type": "object",
    "required": ["version", "groupKey", "status", "receiver", "alerts"],
    "properties": {
        "version": {"type": "string", "enum": ["4"]},
        "groupKey": {"type": "string"},
        "truncatedAlerts": {"type": "integer"},
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "receiver": {"type": "string"},
        "groupLabels": _STRINGS,
        "commonLabels": _STRINGS,
        "commonAnnotations": _STRINGS,
        "externalURL": {"type": "string"},
        "alerts": {"type": "array", "items": ALERT},
    },
}
HANDLED = {
    "type": "object",
    "required": ["status", "handled"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "handled": {
            "type": "integer",
            "minimum": 0,
            "description": "alerts queued for the worker to decide: every one that names a model",
        },
    },
}

MLFLOW_EVENT = {
    "type": "object",
    "required": ["entity", "action", "data"],
    "properties": {
        "entity": {"type": "string"},
        "action": {"type": "string"},
        "timestamp": {"type": "string"},
        "data": {"type": "object"},
    },
}


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "registry-bot webhooks", "version": "1.0.0"},
        "paths": {
            "/hooks/training": {"post": _training()},
            "/hooks/mlflow": {"post": _mlflow()},
            "/hooks/canary": {"post": _canary()},
            "/hooks/alertmanager": {"post": _alertmanager()},
            **_probes(),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Prometheus text", "content": {"text/plain": {}}}
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": _answers(_200=("OpenAPI document", {"type": "object"})),
                }
            },
        },
        "components": _components(),
    }


def _probes() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "summary": "Whether Redis answers",
                "responses": _answers(
                    _200=("Redis answers", {"type": "object"}),
                    _503=("Redis is down", {"type": "object"}),
                ),
            }
        },
        "/livez": {
            "get": {
                "summary": "Whether the service answers at all (Redis has no say)",
                "responses": _answers(_200=("It answers", {"type": "object"})),
            }
        },
    }


def _training() -> dict:
    return {
        "summary": "A training run finished: register, stage and announce its model version",
        "parameters": SIGNED,
        "requestBody": {"required": True, **_json(TRAINING_EVENT)},
        "responses": _answers(_202=("Queued, or a duplicate webhook-id", ACCEPTED), **REFUSALS),
    }


def _canary() -> dict:
    return {
        "summary": (
            "A canary's verdict on a version in its canary window, signed with "
            "CANARY_WEBHOOK_SECRET (never the training secret)"
        ),
        "parameters": SIGNED,
        "requestBody": {"required": True, **_json(CANARY_VERDICT)},
        "responses": _answers(
            _202=("Queued, or a duplicate webhook-id", ACCEPTED),
            _404=("CANARY_WEBHOOK_SECRET is not set", ERROR),
            **REFUSALS,
        ),
    }


def _alertmanager() -> dict:
    return {
        "summary": "Prometheus Alertmanager's webhook: alerts about a recent promotion",
        "security": [{"alertmanagerToken": []}],
        "requestBody": {"required": True, **_json(ALERTMANAGER_PAYLOAD)},
        "responses": _answers(
            _200=("Taken; `handled` counts the alerts queued for the guard", HANDLED),
            _400=("Not an Alertmanager v4 payload (each bad field named in details)", ERROR),
            _401=("Missing or wrong bearer token (ALERTMANAGER_TOKEN)", ERROR),
            _404=("ALERTMANAGER_TOKEN is not set", ERROR),
            _413=REFUSALS["_413"],
            _415=REFUSALS["_415"],
            _503=REFUSALS["_503"],
        ),
    }


def _mlflow() -> dict:
    return {
        "summary": (
            "MLflow's own registry webhook; model_version.created is acted on, and "
            "model_version_alias.created/.deleted of the production alias check a protected "
            "model's Production at once"
        ),
        "parameters": MLFLOW_SIGNED,
        "requestBody": {"required": True, **_json(MLFLOW_EVENT)},
        "responses": _answers(
            _200=("Another event, or a version registry-bot created: ignored", {"type": "object"}),
            _202=("Queued, or already queued for this version or delivery", ACCEPTED),
            _404=("MLFLOW_WEBHOOK_SECRET is not set", ERROR),
            **REFUSALS,
        ),
    }


def _header(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _components() -> dict:
    return {
        "securitySchemes": {"alertmanagerToken": {"type": "http", "scheme": "bearer"}},
        "parameters": {
            "id": _header("webhook-id", "Unique message id; a repeated id is a duplicate"),
            "timestamp": _header("webhook-timestamp", "Unix seconds; at most 5 minutes off"),
            "signature": _header("webhook-signature", "v1,<base64 HMAC-SHA256>, space-separated"),
            "mlflowDelivery": _header("X-MLflow-Delivery-Id", "Delivery id (new per delivery)"),
            "mlflowTimestamp": _header("X-MLflow-Timestamp", "Unix seconds"),
            "mlflowSignature": _header("X-MLflow-Signature", "v1,<base64 HMAC-SHA256>"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "details"],
                "properties": {
                    "error": {"type": "string"},
                    "details": {"type": "array", "items": {}},
                },
            },
            "Accepted": {
                "type": "object",
                "required": ["status", "event_id"],
                "properties": {
                    "status": {"type": "string", "enum": ["queued", "duplicate"]},
                    "event_id": {"type": "string"},
                },
            },
        },
    }
