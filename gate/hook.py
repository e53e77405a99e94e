"""The gate's `before_request` hook on MLflow's Flask app: read, judge, refuse or pass.

The hook knows a registry write by the Flask endpoint MLflow registered it under (its
handler's name), so every path MLflow routes to that handler is covered alike: the REST
API's `/api/2.0/mlflow/…`, the UI's `/ajax-api/2.0/mlflow/…`, any other version MLflow
registers, under any `--static-prefix`. It reads the request with MLflow's own parser
(`_get_request_message`: query parameters of a GET, else the JSON body), so it sees exactly
what the handler will act on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from flask import Response, g, request
from mlflow.exceptions import MlflowException
from mlflow.protos import model_registry_pb2 as pb
from mlflow.server import handlers

from gate.rules import (
    HEADER,
    PROMPT_TAG,
    Ask,
    Found,
    Standing,
    Verdict,
    judge,
    refusal,
    undecided,
)
from gate.settings import GateSettings
from registry.adapters.queue import TASK_GATE_REQUEST, Producer, QueueUnavailable
from registry.rules.settings import SettingsError
from registry.rules.versions import STAGE_TAG, TAG

log = logging.getLogger("registry_bot.gate")
ASKED_FOR = 60  # seconds in which the same person asking for the same version files it once
DECISION_TAG = TAG + "decision"
NOT_THERE = frozenset({"RESOURCE_DOES_NOT_EXIST"})

# Flask endpoint (the handler's name) -> (the request's message, how to read it as an Ask).
Reader = Callable[[Any], Ask]
WRITES: dict[str, tuple[Any, Reader]] = {
    "_transition_stage": (
        pb.TransitionModelVersionStage,
        lambda m: Ask("stage", m.name, m.version, stage=m.stage),
    ),
    "_set_registered_model_alias": (
        pb.SetRegisteredModelAlias,
        lambda m: Ask("set_alias", m.name, m.version, alias=m.alias),
    ),
    "_delete_registered_model_alias": (
        pb.DeleteRegisteredModelAlias,
        lambda m: Ask("delete_alias", m.name, alias=m.alias),
    ),
    "_delete_model_version": (
        pb.DeleteModelVersion,
        lambda m: Ask("delete_version", m.name, m.version),
    ),
    "_delete_registered_model": (pb.DeleteRegisteredModel, lambda m: Ask("delete_model", m.name)),
    "_rename_registered_model": (
        pb.RenameRegisteredModel,
        lambda m: Ask("rename", m.name, new_name=m.new_name),
    ),
    "_set_model_version_tag": (pb.SetModelVersionTag, lambda m: _tags(m, (m.key,))),
    "_delete_model_version_tag": (pb.DeleteModelVersionTag, lambda m: _tags(m, (m.key,))),
    "_set_registered_model_tag": (pb.SetRegisteredModelTag, lambda m: _model_tags(m, (m.key,))),
    "_delete_registered_model_tag": (
        pb.DeleteRegisteredModelTag,
        lambda m: _model_tags(m, (m.key,)),
    ),
    "_create_model_version": (pb.CreateModelVersion, lambda m: _tags(m, _keys(m))),
    "_create_registered_model": (pb.CreateRegisteredModel, lambda m: _tags(m, _keys(m))),
}
# MLflow's webhooks, on which SPEC 11's at-once detection relies: refused to anyone without
# the token while any model is protected, whatever the request says.
WEBHOOK_WRITES = frozenset(
    {"_create_webhook", "_update_webhook", "_delete_webhook", "_test_webhook"}
)


def _tags(message: Any, keys: tuple[str, ...]) -> Ask:
    return Ask("tags", message.name, getattr(message, "version", ""), tag_keys=keys)


def _model_tags(message: Any, keys: tuple[str, ...]) -> Ask:
    return Ask("tags", message.name, tag_keys=keys, model_tag=True)


def _keys(message: Any) -> tuple[str, ...]:
    return tuple(tag.key for tag in message.tags)


class Gate:
    """The hook: registry-bot's own requests pass; a protected Production change is refused."""

    def __init__(self, settings: GateSettings):
        self.settings = settings
        self.token = settings.token.encode()

    def __call__(self) -> Response | None:
        """Flask's before_request: None lets the request through, a Response refuses it."""
        endpoint = request.endpoint or ""
        wanted = WRITES.get(endpoint)
        if wanted is None and endpoint not in WEBHOOK_WRITES:
            return None
        if self._from_registry_bot():
            return None
        if wanted is None:
            return self.decide(Ask("webhook", ""))
        try:
            ask = wanted[1](handlers._get_request_message(wanted[0](), flask_request=request))
        except MlflowException:
            # MLflow's handler parses the same bytes the same way, fails the same way and
            # answers with its own 400; nothing is written.
            return None
        return self.decide(ask)

    def _from_registry_bot(self) -> bool:
        sent = request.headers.get(HEADER, "").encode()
        return hmac.compare_digest(sent, self.token)

    def decide(self, ask: Ask) -> Response | None:
        """Judge `ask` against the current policy; refuse (filing a request) or pass."""
        try:
            current = self.settings.current()
            verdict = judge(ask, current, lookup, find_model)
        except Exception as exc:  # the policy unreadable, MLflow's store failing: refuse
            log.error("gate: cannot decide on %s: %s", ask.model, exc, extra=_ctx(ask))
            return forbidden(undecided(self.settings.last, ask.model, _why(exc)))
        if not verdict.refuse:
            return None
        filed = self.file(ask, verdict) if verdict.request else None
        log.warning("gate: refused %s", verdict.what, extra={**_ctx(ask), "filed": filed})
        return forbidden(refusal(current, ask, verdict, filed=filed))

    def file(self, ask: Ask, verdict: Verdict) -> bool:
        """Queue the refused move into Production as a transition request; say if it was.

        The same person asking for the same version again within ASKED_FOR seconds is told
        it is filed (it is) and queues nothing more: refusals cannot flood the queue."""
        asker = str(getattr(g, "mlflow_authenticated_user", "") or "")
        key = _asked_key(ask.model, verdict.request, asker)
        producer = self.settings.producer()
        try:
            if not producer.redis.set(key, 1, nx=True, ex=ASKED_FOR):
                return True  # asked within the minute: that request is on the queue
        except redis.RedisError:
            return False
        try:
            producer.send(
                TASK_GATE_REQUEST,
                event_id=f"gate-{uuid.uuid4().hex}",
                model_name=ask.model,
                version=verdict.request,
                asked_by=asker,
                asked_at=time.time(),
            )
        except QueueUnavailable:
            _forget(producer, key)
            return False
        return True


def _forget(producer: Producer, key: str) -> None:
    """Drop the asked-for key after a send that failed, so asking again files it."""
    with contextlib.suppress(redis.RedisError):  # else it expires within ASKED_FOR seconds
        producer.redis.delete(key)


def _asked_key(model: str, version: str, asker: str) -> str:
    """The Redis key that says this person asked for this version within ASKED_FOR seconds."""
    digest = hashlib.sha256(json.dumps([model, version, asker]).encode()).hexdigest()
    return f"registry-bot:gate-asked:{digest}"


def lookup(model: str, version: str) -> Standing | None:
    """Read where a version stands from the server's own registry store (None: no such)."""
    try:
        mv = handlers._get_model_registry_store().get_model_version(model, version)
    except MlflowException as exc:
        if exc.error_code in NOT_THERE:
            return None
        raise
    tags = mv.tags or {}
    return Standing(
        stage=str(mv.current_stage or ""),
        aliases=tuple(mv.aliases or ()),
        stage_tag=str(tags.get(STAGE_TAG, "")),
        version=str(mv.version),
        decision=str(tags.get(DECISION_TAG, "")),
    )


def find_model(name: str) -> Found | None:
    """Read the registered model from the server's own store: its name as stored (which a
    database collation may match to another spelling) and whether it is a prompt."""
    try:
        model = handlers._get_model_registry_store().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in NOT_THERE:
            return None
        raise
    # RegisteredModel.tags hides the prompt tag; the entity keeps every tag in `_tags`.
    tags = getattr(model, "_tags", None) or model.tags or {}
    return Found(name=str(model.name), prompt=str(tags.get(PROMPT_TAG, "")).lower() == "true")


def forbidden(message: str) -> Response:
    """MLflow's own error shape: the client raises RestException, the UI shows the message."""
    body = {"error_code": "PERMISSION_DENIED", "message": message}
    return Response(json.dumps(body), status=403, mimetype="application/json")


def _why(exc: Exception) -> str:
    """Say in general terms what failed: the detail (which may hold a setting's value, a
    password in a URL) goes to the server's log, never to the client."""
    if isinstance(exc, SettingsError):
        return "registry-bot's policy could not be read"
    return "MLflow's registry could not be read"


def _ctx(ask: Ask) -> dict[str, str]:
    return {"model": ask.model, "version": ask.version}
