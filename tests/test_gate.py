"""The gate inside MLflow (SPEC 14) against a real `mlflow server --app-name registry-bot`.

One server per module (uvicorn, SQLite) with its own Redis; a second one under gunicorn on
the same store, and once on PostgreSQL. A person's MlflowClient (no MLFLOW_GATE_TOKEN) is
refused every change to a protected model's Production, and the registry is unchanged;
registry-bot's (with the token) passes; an unprotected model is left alone; a refused move
into Production is queued as a transition request, or said not to be when Redis is down;
an unreadable policy refuses (never fail open).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests
from mlflow import MlflowClient
from mlflow.exceptions import RestException

from devkit.postgres import start_postgres
from devkit.stack import free_port, start_mlflow_server, start_redis, stop
from gate.rules import HEADER, Ask, Standing, judge
from registry.adapters.mlflow import MlflowGateway
from registry.adapters.queue import TASK_GATE_REQUEST
from registry.rules.policy import parse_policy
from registry.rules.settings import Settings

pytestmark = pytest.mark.slow
RUN = uuid.uuid4().hex[:6]
TOKEN = f"gate-token-{uuid.uuid4().hex}"
GUARDED, FREE, SPARE = f"gt-guarded-{RUN}", f"gt-free-{RUN}", f"gt-spare-{RUN}"
QUEUE = f"registry-bot-gate-{RUN}"
POLICY = f"""
defaults:
  protect_production: alert
models:
  {GUARDED}:
    channel: CGATE
  {FREE}:
    protect_production: off
"""
PROTECTED = "is protected by registry-bot"


@contextmanager
def as_registry_bot(url: str) -> Iterator[None]:
    """Make this process's MLflow calls to `url` registry-bot's own: the header provider
    sends the token, while MLFLOW_GATE_TOKEN is in the environment, to the server that
    MLFLOW_TRACKING_URI names (as registry-bot's services have both)."""
    os.environ.update({"MLFLOW_GATE_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": url})
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_GATE_TOKEN", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def gate_env(policy: Path, redis_url: str, **more: str) -> dict[str, str]:
    """The MLflow server's settings for the gate."""
    return {
        "MLFLOW_GATE_TOKEN": TOKEN,
        "POLICY_FILE": str(policy),
        "REDIS_URL": redis_url,
        "REGISTRY_BOT_QUEUE": QUEUE,
        "SLACK_CHANNEL": "CNOTICES",
        **more,
    }


@pytest.fixture(scope="module")
def gate_redis(tmp_path_factory) -> Iterator[dict]:
    """A Redis of the module's own: a test stops it to see the gate refuse without it."""
    port, workdir = free_port(), tmp_path_factory.mktemp("gate-redis")
    box = {"url": f"redis://127.0.0.1:{port}/0", "port": port, "dir": workdir}
    box["proc"] = start_redis(port, workdir)
    yield box
    stop(box["proc"])


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate-policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def gated(tmp_path_factory, gate_redis, policy) -> Iterator[tuple[str, Path]]:
    """`mlflow server --app-name registry-bot` (uvicorn, its default) on SQLite."""
    port, workdir = free_port(), tmp_path_factory.mktemp("gated")
    env = gate_env(policy, gate_redis["url"])
    proc = start_mlflow_server(port, workdir, env=env, extra_args=["--app-name", "registry-bot"])
    yield f"http://127.0.0.1:{port}", workdir
    stop(proc)


@pytest.fixture(scope="module")
def guarded(gated) -> str:
    """The protected model, made once for the module: v1 in Production, v2 not."""
    url, _ = gated
    make_model(url, GUARDED)
    return GUARDED


def make_model(url: str, name: str, *, versions: int = 2) -> None:
    """As registry-bot: register `versions` versions, v1 in Production with the alias."""
    with as_registry_bot(url):
        client = MlflowClient(url)
        client.create_registered_model(name)
        for _ in range(versions):
            client.create_model_version(name, "s3://bucket/model")
        MlflowGateway(url).move(name, "1", "Production")


def snapshot(url: str, name: str) -> dict:
    """The model as MLflow has it: each version's stage, and the aliases."""
    client = MlflowClient(url)
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "stages": {v.version: v.current_stage for v in versions},
        "aliases": dict(client.get_registered_model(name).aliases),
    }


def refused(call) -> str:
    """Run a person's call; return the refusal's message (it must be PERMISSION_DENIED)."""
    with pytest.raises(RestException) as caught:
        call()
    assert caught.value.error_code == "PERMISSION_DENIED", caught.value
    message = caught.value.json["message"]  # as the server sent it, shown as raised
    assert caught.value.message == f"PERMISSION_DENIED: {message}"
    return message


def queued(url: str) -> list[dict]:
    """The gate's transition requests waiting on the module's queue."""
    raw = redis.Redis.from_url(url).lrange(QUEUE, 0, -1)
    messages = [json.loads(r) for r in raw]
    return [
        json.loads(base64.b64decode(m["body"]))[1]
        for m in messages
        if m["headers"]["task"] == TASK_GATE_REQUEST
    ]


def every_production_change_is_refused(url: str, name: str) -> list[str]:
    """Try each change SPEC 14 refuses, as a person; return the messages."""
    client = MlflowClient(url)
    before = snapshot(url, name)
    with pytest.warns(FutureWarning):  # stage APIs are deprecated, yet MLflow serves them
        messages = [
            refused(lambda: client.transition_model_version_stage(name, "2", "Production")),
            refused(lambda: client.transition_model_version_stage(name, "2", "production")),
            refused(lambda: client.transition_model_version_stage(name, "1", "Archived")),
            refused(lambda: client.transition_model_version_stage(name, "1", "Staging")),
        ]
    messages += [
        refused(lambda: client.set_registered_model_alias(name, "production", "2")),
        refused(lambda: client.delete_registered_model_alias(name, "production")),
        refused(lambda: client.delete_model_version(name, "1")),
        refused(lambda: client.delete_registered_model(name)),
        refused(lambda: client.rename_registered_model(name, f"{name}-renamed")),
        refused(lambda: client.set_model_version_tag(name, "2", "registry_bot.decision", "ok")),
    ]
    assert snapshot(url, name) == before  # the registry is unchanged
    return messages


# --- acceptance 1: a person cannot change a protected model's Production -------------------


def test_a_person_cannot_change_a_protected_production_and_nothing_changes(
    gated, guarded, gate_redis
):
    url, _ = gated
    messages = every_production_change_is_refused(url, GUARDED)
    assert all(m.startswith(f"{GUARDED} {PROTECTED}") for m in messages), messages
    assert all("in Slack (channel CGATE)" in m for m in messages), messages
    assert "Your request to make it Production is filed" in messages[0]
    assert "moving version 1 out of Production is refused" in messages[2]
    assert "deleting the registered model is refused" in messages[7]
    # Each refused move into Production (two by stage, one by alias) was filed; the same
    # person asking again for the same version within a minute queues nothing more.
    asked = [(q["model_name"], q["version"]) for q in queued(gate_redis["url"])]
    assert asked.count((GUARDED, "2")) == 1


def test_a_request_is_filed_once_and_only_for_a_version_that_can_go_to_production(
    gated, gate_redis
):
    """Findings 9 and 11: the version as MLflow resolved it; nothing filed for a version that
    does not exist or is already Production; asking again floods nothing."""
    url, _ = gated
    name = f"gt-again-{RUN}"
    make_model(url, name)
    client = MlflowClient(url)
    with pytest.warns(FutureWarning):
        ask = lambda v: refused(  # noqa: E731
            lambda: client.transition_model_version_stage(name, v, "Production")
        )
        for _ in range(5):
            message = ask("02")
            assert "version 2 was not moved" in message and "is filed" in message, message
            assert "an approver decides it in Slack (channel CNOTICES)" in message, message
        missing, already = ask("999"), ask("1")
    assert f"{name} has no version 999" in missing and "Nothing was filed" in missing
    assert "version 1 is already in Production" in already and "is filed" not in already
    asked = [q["version"] for q in queued(gate_redis["url"]) if q["model_name"] == name]
    assert asked == ["2"]


def test_an_unreadable_request_gets_mlflows_own_400_not_a_refusal(gated, guarded):
    """Finding 8: MLflow's handler parses the same bytes, fails the same way, and answers."""
    url, _ = gated
    path = "/api/2.0/mlflow/model-versions/transition-stage"
    for body, kind in (("{not json", "application/json"), ("name=x", "text/plain")):
        resp = requests.post(url + path, data=body, headers={"Content-Type": kind}, timeout=10)
        assert resp.status_code == 400, (kind, resp.status_code, resp.text)
        assert resp.json()["error_code"] != "PERMISSION_DENIED"
    assert snapshot(url, GUARDED)["stages"]["1"] == "Production"


def test_mlflows_webhooks_are_registry_bots_while_a_model_is_protected(gated):
    """Finding 5: deleting registry-bot's webhook would blind SPEC 11's at-once detection."""
    from mlflow.server import handlers

    url, _ = gated
    wanted = {"_create_webhook", "_update_webhook", "_delete_webhook", "_test_webhook"}
    routes = [
        (path.replace("<webhook_id>", "wh-1"), methods[0])
        for path, handler, methods in handlers.get_endpoints()
        if handler.__name__ in wanted
    ]
    assert len({m for _, m in routes}) >= 3 and len(routes) >= 4, routes
    events = [{"entity": "model_version", "action": "created"}]
    body = {"name": "x", "url": "https://example.com/h", "events": events}
    for path, method in routes:
        resp = requests.request(method, url + path, json=body, timeout=10)
        assert resp.status_code == 403, (path, method, resp.text)
        assert "webhooks are protected by registry-bot" in resp.json()["message"]
    with_token = {HEADER: TOKEN}
    resp = requests.delete(url + "/api/2.0/mlflow/webhooks/wh-1", headers=with_token, timeout=10)
    assert resp.status_code != 403, resp.text  # registry-bot's own: MLflow answers


def test_a_prompt_is_left_alone_and_a_model_cannot_be_made_one(gated, guarded):
    """Finding 10: MLflow keeps prompts as registered models tagged as prompts."""
    url, _ = gated
    name = f"gt-prompt-{RUN}"
    client = MlflowClient(url)
    client.register_prompt(name, "Summarise {{text}}")  # a registered model tagged a prompt
    client.set_prompt_alias(name, "production", 1)
    client.delete_prompt_alias(name, "production")
    refused(lambda: client.set_registered_model_tag(GUARDED, "mlflow.prompt.is_prompt", "true"))
    refused(lambda: client.delete_registered_model(GUARDED))  # still a model, still gated


def test_what_does_not_touch_production_passes(gated, guarded):
    url, _ = gated
    client = MlflowClient(url)
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage(GUARDED, "2", "Staging")
    client.set_registered_model_alias(GUARDED, "challenger", "2")
    client.set_model_version_tag(GUARDED, "2", "team", "fraud")
    client.update_model_version(GUARDED, "2", description="a person may describe it")
    assert snapshot(url, GUARDED)["stages"] == {"1": "Production", "2": "Staging"}


def test_registry_bot_passes_with_its_token_and_a_wrong_one_does_not(gated):
    url, _ = gated
    name = f"gt-bot-{RUN}"
    make_model(url, name)  # as registry-bot: v1 moved into Production through the gate
    headers = {HEADER: TOKEN[:-1] + "x", "Content-Type": "application/json"}
    body = {"name": name, "version": "2", "stage": "Production"}
    path = "/api/2.0/mlflow/model-versions/transition-stage"
    forged = requests.post(url + path, json=body, headers=headers, timeout=10)
    assert forged.status_code == 403
    with as_registry_bot(url):
        MlflowGateway(url).move(name, "2", "Production")
        MlflowClient(url).delete_registered_model(name)


def test_in_aliases_mode_production_is_the_alias_or_registry_bots_stage_tag(gated):
    """REGISTRY_MODE=aliases keeps the stage in registry_bot.stage and the alias: a version
    either marks as Production is one a person cannot delete."""
    url, _ = gated
    name = f"gt-aliased-{RUN}"
    with as_registry_bot(url):
        client = MlflowClient(url)
        client.create_registered_model(name)
        for _ in range(4):
            client.create_model_version(name, "s3://bucket/model")
        client.set_model_version_tag(name, "1", "registry_bot.stage", "Production")
        client.set_registered_model_alias(name, "production", "2")
        client.set_model_version_tag(name, "4", "registry_bot.decision", "approved")
    person = MlflowClient(url)
    refused(lambda: person.delete_model_version(name, "1"))
    refused(lambda: person.delete_model_version(name, "2"))
    refused(lambda: person.delete_model_version(name, "4"))  # being promoted (finding 12)
    refused(lambda: person.set_model_version_tag(name, "3", "registry_bot.stage", "Production"))
    person.delete_model_version(name, "3")  # in no stage: a person's to delete
    assert sorted(snapshot(url, name)["stages"]) == ["1", "2", "4"]


# --- acceptance 2: the UI's endpoints, and every path MLflow routes to a watched handler ----


def test_the_ui_transition_gets_403_in_mlflows_error_shape(gated, guarded):
    url, _ = gated
    body = {"name": GUARDED, "version": "2", "stage": "Production"}
    resp = requests.post(
        f"{url}/ajax-api/2.0/mlflow/model-versions/transition-stage", json=body, timeout=10
    )
    assert resp.status_code == 403
    assert resp.json()["error_code"] == "PERMISSION_DENIED"
    assert resp.json()["message"].startswith(f"{GUARDED} {PROTECTED}")


def test_every_route_to_a_watched_handler_is_gated(gated, guarded):
    from mlflow.server import handlers

    url, _ = gated
    bodies = {
        "_delete_registered_model": {"name": GUARDED},
        "_rename_registered_model": {"name": GUARDED, "new_name": "x"},
        "_transition_stage": {"name": GUARDED, "version": "1", "stage": "Archived"},
        "_delete_registered_model_alias": {"name": GUARDED, "alias": "production"},
    }
    routes = [
        (path, methods[0], bodies[handler.__name__])
        for path, handler, methods in handlers.get_endpoints()
        if handler.__name__ in bodies
    ]
    assert len(routes) >= 8 and any(p.startswith("/ajax-api/") for p, _, _ in routes)
    for path, method, body in routes:
        resp = requests.request(method, url + path, json=body, timeout=10)
        assert resp.status_code == 403, (path, resp.text)
    assert snapshot(url, GUARDED)["aliases"]["production"] == "1"


# --- acceptance 5: an unprotected model is left alone --------------------------------------


def test_an_unprotected_model_is_left_alone(gated, gate_redis):
    url, _ = gated
    make_model(url, FREE)
    client = MlflowClient(url)
    before = len(queued(gate_redis["url"]))
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage(FREE, "2", "Production")
        client.transition_model_version_stage(FREE, "1", "Archived")
    client.set_registered_model_alias(FREE, "production", "2")
    client.set_model_version_tag(FREE, "2", "registry_bot.note", "anyone may")
    client.delete_registered_model_alias(FREE, "production")
    client.delete_model_version(FREE, "2")
    client.delete_registered_model(FREE)
    assert len(queued(gate_redis["url"])) == before  # nothing filed


# --- never fail open ----------------------------------------------------------------------


def test_an_unreadable_policy_refuses_until_it_is_fixed(gated, policy):
    url, _ = gated
    client = MlflowClient(url)
    make_model(url, SPARE, versions=1)
    try:
        policy.write_text("models: [not, a, mapping\n")
        message = refused(lambda: client.set_registered_model_alias(SPARE, "production", "1"))
        assert "could not check this request" in message and "nothing changed" in message
        # The reason is general: the detail (which may hold a setting's value) is logged.
        assert "(registry-bot's policy could not be read)" in message, message
        assert str(policy) not in message
        # Even a model the good policy leaves alone: which models are protected is unknown.
        refused(lambda: client.delete_registered_model(SPARE))
    finally:
        policy.write_text(POLICY)
    time.sleep(0.01)
    refused(lambda: client.delete_registered_model(SPARE))  # protected again, by default
    assert snapshot(url, SPARE)["stages"] == {"1": "Production"}


def test_with_redis_down_it_still_refuses_and_says_the_request_was_not_filed(
    gated, guarded, gate_redis
):
    url, _ = gated
    client = MlflowClient(url)
    stop(gate_redis["proc"])
    try:
        started = time.monotonic()
        with pytest.warns(FutureWarning):
            message = refused(
                lambda: client.transition_model_version_stage(GUARDED, "2", "Production")
            )
        took = time.monotonic() - started
        assert "could not be filed" in message and "try again" in message, message
        assert took < 10, took
        assert snapshot(url, GUARDED)["stages"]["1"] == "Production"
    finally:
        gate_redis["proc"] = start_redis(gate_redis["port"], gate_redis["dir"])


# --- both servers MLflow offers, and PostgreSQL ---------------------------------------------


@pytest.mark.parametrize(
    ("server", "opts", "says"),
    [
        ("gunicorn", ["--gunicorn-opts", "--timeout 60"], "Booting worker"),
        ("waitress", ["--waitress-opts", "--threads 4"], "Serving on"),
    ],
)
def test_under_gunicorn_and_waitress_the_gate_refuses_the_same(
    gated, guarded, gate_redis, policy, tmp_path, server, opts, says
):
    url, workdir = gated
    port = free_port()
    env = gate_env(policy, gate_redis["url"])
    store = f"sqlite:///{workdir / 'mlflow.db'}"  # the same registry as the uvicorn server
    args = ["--app-name", "registry-bot", *opts]
    proc = start_mlflow_server(port, tmp_path, env=env, backend_store_uri=store, extra_args=args)
    try:
        other = f"http://127.0.0.1:{port}"
        refused(lambda: MlflowClient(other).delete_registered_model(GUARDED))
        with pytest.warns(FutureWarning):
            refused(
                lambda: MlflowClient(other).transition_model_version_stage(GUARDED, "1", "None")
            )
        with as_registry_bot(other):
            MlflowClient(other).set_model_version_tag(GUARDED, "1", "registry_bot.probe", server)
        assert says in (tmp_path / "mlflow-server.log").read_text()
    finally:
        stop(proc)


def test_on_postgresql_a_person_is_refused_and_registry_bot_is_not(tmp_path, gate_redis, policy):
    pg = start_postgres(user="mlflow", password="mlflow", database="mlflow")
    port = free_port()
    env = gate_env(policy, gate_redis["url"])
    args = ["--app-name", "registry-bot"]
    proc = None
    try:
        store = pg.url("psycopg2")
        proc = start_mlflow_server(
            port, tmp_path, env=env, backend_store_uri=store, extra_args=args
        )
        url = f"http://127.0.0.1:{port}"
        make_model(url, GUARDED)
        every_production_change_is_refused(url, GUARDED)
        with as_registry_bot(url):
            MlflowGateway(url).move(GUARDED, "2", "Production")
        assert snapshot(url, GUARDED)["stages"] == {"1": "Archived", "2": "Production"}
    finally:
        stop(proc)
        pg.stop()


# --- the rules, pure ----------------------------------------------------------------------


def test_the_rules_read_stage_names_and_aliases_as_mlflow_does():
    settings = Settings(mlflow_tracking_uri="", policy=parse_policy(POLICY))
    never = lambda model, version: pytest.fail("no lookup needed")  # noqa: E731
    prod = lambda model, version: Standing("None", ("PRODUCTION",))  # noqa: E731
    staged = lambda model, version: Standing("Staging", version=version)  # noqa: E731
    assert judge(Ask("stage", GUARDED, "3", stage=" production "), settings, staged).request == "3"
    assert judge(Ask("stage", FREE, "3", stage="Production"), settings, never).refuse is False
    # Renaming a free model to a protected name is refused too.
    assert judge(Ask("rename", FREE, new_name=GUARDED), settings, never).refuse
    assert judge(Ask("delete_version", GUARDED, "3"), settings, prod).refuse
    assert not judge(Ask("tags", GUARDED, "3", tag_keys=("team",)), settings, never).refuse
    only_one = Settings(
        mlflow_tracking_uri="",
        policy=parse_policy(
            f"defaults:\n  protect_production: off\nmodels:\n  {GUARDED}:\n"
            "    protect_production: alert\n"
        ),
    )
    assert judge(Ask("delete_model", GUARDED.upper()), only_one, never).refuse
    assert not judge(Ask("delete_model", FREE), only_one, never).refuse


# --- the gate's process and registry-bot's proof --------------------------------------------


def test_the_gate_loads_no_celery_and_the_doors_load_no_gate():
    import subprocess
    import sys

    probe = (
        "import sys, gate.app, gate.hook, gate.header; "
        "print(','.join(m for m in ('celery', 'kombu') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_token_read_from_dotenv_is_sent_on_registry_bots_mlflow_requests(tmp_path):
    """registry-bot reads settings from the environment over `.env`; MLflow's header plugin
    sees only the environment, so the services carry the token there (carry_gate_token)."""
    import subprocess
    import sys

    from devkit.stack import service_env

    (tmp_path / ".env").write_text(f"MLFLOW_GATE_TOKEN={TOKEN}\nMLFLOW_TRACKING_URI=http://x\n")
    probe = (
        "from registry.process.settings import load_settings\n"
        "from registry.process.connect import carry_gate_token\n"
        "from mlflow.utils import rest_utils\n"
        "sent = {}\n"
        "def capture(*args, **kwargs):\n"
        "    sent.clear(); sent.update(kwargs['headers']); raise RuntimeError('captured')\n"
        "rest_utils._get_http_response_with_retries = capture\n"
        "def headers():\n"
        "    try:\n"
        "        rest_utils.http_request(rest_utils.MlflowHostCreds('http://x'), '/a', 'GET')\n"
        "    except Exception:\n"
        "        return dict(sent)\n"
        f"assert {HEADER!r} not in headers()\n"
        "carry_gate_token(load_settings())\n"
        f"print(headers()[{HEADER!r}])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=service_env(),  # no MLFLOW_GATE_TOKEN in the environment itself
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == TOKEN


def test_the_gate_does_not_start_without_its_token(tmp_path):
    from gate.settings import GateSettings
    from registry.rules.settings import SettingsError

    with pytest.raises(SettingsError, match="MLFLOW_GATE_TOKEN is required"):
        GateSettings({}, dotenv_path=str(tmp_path / "none"))
    with pytest.raises(SettingsError, match="at least 16"):
        GateSettings({"MLFLOW_GATE_TOKEN": "short"}, dotenv_path=str(tmp_path / "none"))


def test_mlflow_server_with_the_gate_and_no_token_stops_with_one_line(tmp_path):
    import subprocess
    import sys

    from devkit.stack import service_env

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [sys.executable, "-m", "mlflow", "server", "--port", str(free_port())]
    argv += ["--backend-store-uri", store, "--app-name", "registry-bot"]
    done = subprocess.run(
        argv, cwd=tmp_path, env=service_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert (
        "MLFLOW_GATE_TOKEN is required by `mlflow server --app-name registry-bot`"
        in (done.stderr.strip().splitlines()[-1])
    )
