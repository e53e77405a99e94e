"""registry-bot behind its gate, end to end: real MLflow (`--app-name registry-bot-basic-auth`:
MLflow's basic-auth, then the gate), Redis, worker, webhooks, bot and the Slack double.

registry-bot's whole loop works through the gate (SPEC 14); a person signed in to MLflow
who moves a hand-registered version into Production is refused, and the request becomes
one ordinary notice naming them, which they cannot approve themselves and asking again
does not repeat; an approver's Approve promotes it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import RestException

from devkit.stack import free_port, start_mlflow_server, start_redis, stop
from registry.adapters.queue import TASK_PROTECT, Producer
from registry.flows.protection import ALERT_EVENT
from registry.rules.decisions import asker_key
from registry.rules.settings import Settings
from registry.views.alerts import REVERT_ACTION
from tests.support import (
    SERVICES,
    SLACK_SIGNING_SECRET,
    StackFactory,
    answered,
    approve_click,
    button_in,
    click,
    confirm_with_reason,
    log_model,
    notices_for,
    production_versions,
    slash,
    stage_and_wait,
    wait_for,
    wait_idle,
)

pytestmark = pytest.mark.slow
RUN = uuid.uuid4().hex[:6]
TOKEN = f"gate-token-{uuid.uuid4().hex}"
LOOP, ASKED, NUDGED = f"gl-loop-{RUN}", f"gl-asked-{RUN}", f"gl-nudged-{RUN}"
ADMIN = ("admin", f"admin-{uuid.uuid4().hex}")  # registry-bot signs in as MLflow's admin
RITA = ("rita@example.com", f"rita-{uuid.uuid4().hex}")  # Slack's UREQUESTER, by e-mail
ADA = ("ada@example.com", f"ada-{uuid.uuid4().hex}")  # Slack's UAPPROVER1
CHANNEL = "CGATED"
QUEUE = f"registry-bot-gl-{RUN}"
POLICY = f"""
defaults:
  protect_production: alert
  channel: {CHANNEL}
"""
AUTH_INI = """[mlflow]
default_permission = MANAGE
database_uri = sqlite:///{path}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Each request's password check (PBKDF2) is done once a minute per user, not every time.
auth_cache_ttl_seconds = 60
"""


@contextmanager
def signed_in(user: tuple[str, str]) -> Iterator[None]:
    """Make this process's MLflow calls as `user` (basic-auth); registry-bot's token is not
    in this process's environment, so these are a person's requests."""
    before = {
        k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def loop_redis(tmp_path_factory) -> Iterator[str]:
    """A Redis of the module's own: the gate queues where the stack's worker listens."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("gl-redis"))
    yield f"redis://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory, loop_redis) -> Iterator[str]:
    """MLflow with basic-auth and the gate, on SQLite; rita may manage every model."""
    workdir = tmp_path_factory.mktemp("gated-auth")
    (workdir / "policy.yaml").write_text(POLICY)
    (workdir / "auth.ini").write_text(AUTH_INI.format(path=workdir / "auth.db"))
    env = {
        "MLFLOW_GATE_TOKEN": TOKEN,
        "POLICY_FILE": str(workdir / "policy.yaml"),
        "REDIS_URL": f"{loop_redis}/0",
        "REGISTRY_BOT_QUEUE": QUEUE,
        "MLFLOW_AUTH_CONFIG_PATH": str(workdir / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
    }
    port = free_port()
    args = ["--app-name", "registry-bot-basic-auth"]
    proc = start_mlflow_server(port, workdir, env=env, extra_args=args)
    url = f"http://127.0.0.1:{port}"
    for user, password in (RITA, ADA):
        created = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": user, "password": password},
            auth=ADMIN,
            timeout=10,
        )
        assert created.ok, created.text
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def gated_stack(server, loop_redis, slack, tmp_path_factory):
    """registry-bot's services on the gated server, signed in as admin, with the token."""
    policy = tmp_path_factory.mktemp("gl-policy") / "policy.yaml"
    policy.write_text(POLICY)
    factory = StackFactory(
        redis_base=loop_redis,
        mlflow_uri=server,
        slack=slack,
        workdir=tmp_path_factory.mktemp("gl-stacks"),
        base_env={
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
            "SLACK_CHANNEL": "CNOTICES",
            "APPROVERS": "UAPPROVER1,UAPPROVER2,UREQUESTER",
            "POLICY_FILE": str(policy),
            "MLFLOW_GATE_TOKEN": TOKEN,
            "MLFLOW_TRACKING_USERNAME": ADMIN[0],
            "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        },
    )
    overrides = {"REDIS_URL": f"{loop_redis}/0", "REGISTRY_BOT_QUEUE": QUEUE}
    with signed_in(ADMIN):
        yield factory.get(services=SERVICES, **overrides)
    factory.stop_all()


def approve(stack, slack, model, version, user, ts) -> str:
    return approve_click(stack, slack, model, version, user, ts, CHANNEL)


def in_production(url: str, model: str, version: str) -> bool:
    return production_versions(url, model) == [version]


# --- acceptance 3: registry-bot's whole loop works behind the gate --------------------------


def test_event_notice_approve_rollback_and_revert_all_pass_the_gate(gated_stack, slack, server):
    stack = gated_stack
    v1, channel, ts = stage_and_wait(stack, server, LOOP, constant=1.0)
    assert channel == CHANNEL
    approve(stack, slack, LOOP, v1, "UAPPROVER1", ts)
    wait_for(lambda: in_production(server, LOOP, v1), "v1 promoted through the gate", 30)
    v2, _, ts2 = stage_and_wait(stack, server, LOOP, constant=2.0)
    approve(stack, slack, LOOP, v2, "UAPPROVER1", ts2)
    wait_for(lambda: in_production(server, LOOP, v2), "v2 promoted through the gate", 30)

    resp, url = slash(stack.bot_url, slack, f"rollback {LOOP}", user="UAPPROVER2", channel=CHANNEL)
    assert resp.status_code == 200
    confirm_with_reason(stack, slack, answered(slack, url)[0], "UAPPROVER2", reason="gate test")
    wait_for(lambda: in_production(server, LOOP, v1), "rolled back to v1 through the gate", 30)

    # What bypasses the API (a direct database write, here with the token) is SPEC 11's to
    # find: alerted, and reverted at an approver's click, through the gate.
    with _registry_bot_token(server):
        client = MlflowClient(server)
        with pytest.warns(FutureWarning):
            client.transition_model_version_stage(LOOP, v2, "Production")
            client.transition_model_version_stage(LOOP, v1, "Archived")
    settings = Settings(mlflow_tracking_uri=server, redis_url=stack.redis_url, queue=stack.queue)
    Producer(settings).send(TASK_PROTECT, event_id=f"t-{RUN}", model_name=LOOP)
    alert = wait_for(lambda: _alert(slack, LOOP), "the out-of-band alert", 30)
    value = button_in(alert, REVERT_ACTION)["value"]
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=REVERT_ACTION,
        value=value,
        message_ts=alert["ts"],
        channel=CHANNEL,
    )
    wait_for(lambda: in_production(server, LOOP, v1), "reverted to v1 through the gate", 30)


# --- acceptances 4 and 6: a refused promotion becomes one request naming the signed-in user --


def test_a_refused_promotion_is_one_request_the_asker_cannot_approve(gated_stack, slack, server):
    stack = gated_stack
    with signed_in(RITA):
        run_id = log_model(server, constant=5.0)
        client = MlflowClient(server)
        client.create_registered_model(ASKED)
        mv = client.create_model_version(ASKED, f"runs:/{run_id}/model", run_id=run_id)
        with pytest.warns(FutureWarning):
            message = _refused(
                lambda: client.transition_model_version_stage(ASKED, mv.version, "Production")
            )
    assert message.startswith(f"{ASKED} is protected by registry-bot")
    assert (
        f"request to make it Production is filed: an approver decides it in Slack "
        f"(channel {CHANNEL})" in message
    )
    notice = wait_for(lambda: notices_for(slack, ASKED), "the request's notice", 30)[0]
    assert notice.params["channel"] == CHANNEL
    shown = str(notice.params["blocks"])
    assert "Asked for Production in MLflow by rita@example.com at" in shown  # basic-auth's user
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", shown)
    ts = wait_for(
        lambda: client.get_model_version(ASKED, mv.version).tags.get("registry_bot.notice_ts"),
        "the notice tag",
    )
    assert client.get_model_version(ASKED, mv.version).current_stage == "Staging"

    repeats = stack.log("worker").count("task done: already_requested")
    with signed_in(RITA):  # asking again, three times, by stage and by alias
        with pytest.warns(FutureWarning):
            again = [
                _refused(
                    lambda: client.transition_model_version_stage(ASKED, mv.version, "Production")
                )
                for _ in range(2)
            ]
        again.append(
            _refused(lambda: client.set_registered_model_alias(ASKED, "production", mv.version))
        )
    assert all("is filed" in m for m in again), again
    wait_idle(stack)
    # The same person asking for the same version within a minute queues nothing more.
    assert stack.log("worker").count("task done: already_requested") == repeats
    assert len(notices_for(slack, ASKED)) == 1
    notes = [
        c
        for c in slack.calls("chat.postMessage")
        if c.params.get("thread_ts") == ts and "asked in MLflow" in c.params.get("text", "")
    ]
    assert len(notes) <= 1  # one thread note at most

    said = answered(slack, approve(stack, slack, ASKED, mv.version, "UREQUESTER", ts))[-1]["text"]
    assert "someone else has to approve it" in said
    assert client.get_model_version(ASKED, mv.version).current_stage == "Staging"
    approve(stack, slack, ASKED, mv.version, "UAPPROVER2", ts)
    wait_for(lambda: in_production(server, ASKED, mv.version), "the request approved", 30)


ADA_ASKED = f"registry_bot.{asker_key('ada@example.com')}"  # one tag each person who asked


def test_an_approver_who_asked_in_mlflow_cannot_approve_it_either(gated_stack, slack, server):
    """A candidate a pipeline asked for (rita) that an approver (ada) also asks for in MLflow:
    the notice is the request; ada asked, so another approver decides."""
    stack = gated_stack
    version, _, ts = stage_and_wait(stack, server, NUDGED, constant=6.0)
    with signed_in(ADA):
        client = MlflowClient(server)
        _refused(lambda: client.set_registered_model_alias(NUDGED, "production", version))
    wait_for(
        lambda: client.get_model_version(NUDGED, version).tags.get(ADA_ASKED) == "ada@example.com",
        "ada recorded as asking",
    )
    said = answered(slack, approve(stack, slack, NUDGED, version, "UAPPROVER1", ts))[-1]["text"]
    assert "someone else has to approve it" in said
    approve(stack, slack, NUDGED, version, "UAPPROVER2", ts)
    wait_for(lambda: in_production(server, NUDGED, version), "approved by another", 30)


@contextmanager
def _registry_bot_token(server: str) -> Iterator[None]:
    """Send the token, as registry-bot's services do, to `server` (their tracking URI)."""
    os.environ.update({"MLFLOW_GATE_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": server})
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_GATE_TOKEN", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _refused(call) -> str:
    with pytest.raises(RestException) as caught:
        call()
    assert caught.value.error_code == "PERMISSION_DENIED"
    return caught.value.json["message"]


def _alert(slack, model: str) -> dict | None:
    found = [
        m
        for m in slack.messages(CHANNEL)
        if (m.get("metadata") or {}).get("event_type") == ALERT_EVENT and model in m.get("text", "")
    ]
    return found[-1] if found else None
