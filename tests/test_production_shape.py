"""The production shape on this machine: MLflow on PostgreSQL (psycopg2 and psycopg 3), gunicorn
with two workers per door, two worker processes, beat; the same commands as docker-compose.yml."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import mlflow
import pytest
import redis
import requests
import yaml
from mlflow import MlflowClient

from devkit import prodstack
from devkit.postgres import database_url
from devkit.prodstack import DRIVERS, Addresses, ProdStack
from devkit.slack_double import SlackDouble
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import (
    MLFLOW_SECRET,
    TRAINING_SECRET,
    click,
    confirm_with_reason,
    log_model,
    signed_headers,
    slash,
)

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
MLFLOW_IMAGE = (REPO / "docker" / "mlflow.Dockerfile").read_text(encoding="utf-8")
POSTGRES_PORT = 5432  # the postgres image's port; the compose file publishes none
# Python packages that provide each SQLAlchemy PostgreSQL driver.
DRIVER_PACKAGES = {"psycopg2": "psycopg2", "psycopg2-binary": "psycopg2", "psycopg": "psycopg"}
TOKEN = "xoxb-prod-token"
CLICKERS = [f"UCLICK{i:02d}" for i in range(20)]
USERS = {
    "UAPPROVER1": {"name": "ada", "email": "ada@example.com"},
    "UAPPROVER2": {"name": "grace", "email": "grace@example.com"},
    "UREQUESTER": {"name": "rita", "email": "rita@example.com"},
    **{u: {"name": u.lower(), "email": f"{u.lower()}@example.com"} for u in CLICKERS},
}
SETTINGS = {
    "SLACK_BOT_TOKEN": TOKEN,
    "SLACK_SIGNING_SECRET": "test-signing-secret",
    "SLACK_CHANNEL": "CNOTICES",
    "APPROVERS": ",".join(["UAPPROVER1", "UAPPROVER2", *CLICKERS]),
    "TRAINING_WEBHOOK_SECRET": TRAINING_SECRET,
    "MLFLOW_WEBHOOK_SECRET": MLFLOW_SECRET,
    # No sweep during the tests: it would take a worker process the two-worker race expects.
    "SWEEP_INTERVAL": "3600",
}
QUEUE = "registry-bot"  # the default REGISTRY_BOT_QUEUE, a Redis list
APP_SERVICES = ("webhooks", "worker", "scheduler", "bot")


# --- the compose file and the stack run the same commands ---------------------------------


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _environment(service: str) -> dict[str, str]:
    env = COMPOSE[service].get("environment", {})
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _container_port(service: str) -> int:
    return int(str(COMPOSE[service]["ports"][0]).rsplit(":", 1)[-1])


def _image_driver() -> str:
    """Return the PostgreSQL driver the MLflow image installs (exactly one)."""
    installs = [line for line in MLFLOW_IMAGE.splitlines() if "pip install" in line]
    named = {
        DRIVER_PACKAGES[m]
        for line in installs
        for m in re.findall(r"(psycopg2-binary|psycopg2|psycopg)(?=[\[\s\"'<>=]|$)", line)
    }
    assert len(named) == 1, f"the MLflow image installs drivers {named}"
    return named.pop()


def _compose_addresses() -> Addresses:
    """Return the compose stack's addresses, read from the compose file and the image."""
    db = _environment("postgres")
    credentials = (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
    backend = database_url(
        _image_driver(), *credentials, "postgres", POSTGRES_PORT, db["POSTGRES_DB"]
    )
    artifacts = next(v.split(":")[1] for v in COMPOSE["mlflow"]["volumes"] if "artifact" in v)
    redis = _argv(COMPOSE["redis"]["command"])
    return Addresses(
        bind=_environment("webhooks")["WEBHOOKS_HOST"],
        mlflow_port=_container_port("mlflow"),
        webhooks_port=_container_port("webhooks"),
        bot_port=_container_port("bot"),
        backend_store_uri=backend,
        artifacts=artifacts,
        redis_password=redis[redis.index("--requirepass") + 1],  # compose interpolates it
    )


@pytest.mark.parametrize("service", list(prodstack.commands(_compose_addresses())))
def test_the_stack_runs_each_service_with_the_compose_command(service):
    ours = prodstack.commands(_compose_addresses())[service]
    assert ours == _argv(COMPOSE[service]["command"])


def test_the_compose_database_is_the_stacks_and_its_driver_is_installed():
    db = _environment("postgres")
    names = {"user": "POSTGRES_USER", "password": "POSTGRES_PASSWORD", "database": "POSTGRES_DB"}
    assert {key: db[name] for key, name in names.items()} == prodstack.DATABASE
    uri = _argv(COMPOSE["mlflow"]["command"])
    scheme = urlsplit(uri[uri.index("--backend-store-uri") + 1]).scheme
    # A bare postgresql:// is psycopg 3 to SQLAlchemy 2.1: the URI must name the driver.
    assert scheme == f"postgresql+{_image_driver()}"


def test_the_stack_runs_as_many_worker_copies_as_compose():
    assert COMPOSE["worker"]["deploy"]["replicas"] == prodstack.WORKER_COPIES


def test_the_mlflow_server_has_the_compose_settings():
    ours = prodstack.mlflow_environment("key")
    for name, value in _environment("mlflow").items():
        assert name in ours, name
        if "${" not in value:  # interpolated ones come from .env in compose
            assert ours[name] == value, name


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_is_told_what_compose_tells_it(service):
    urls = dict.fromkeys(prodstack.APP_ADDRESSES, "http://x")
    ours = prodstack.app_environment(service, urls, _compose_addresses().bind)
    theirs = _environment(service)
    assert set(ours) == set(theirs)
    for name in prodstack.BIND_SETTING.values():
        assert ours.get(name) == theirs.get(name)


# --- the stack, once per driver -------------------------------------------------------------


@pytest.fixture(scope="module", params=DRIVERS)
def prod(request) -> Iterator[ProdStack]:
    """The whole production shape on MLflow-on-PostgreSQL through one driver."""
    stack = ProdStack(
        driver=request.param,
        settings=SETTINGS,
        slack=SlackDouble(token=TOKEN, users=USERS),
        # The server caches its webhook list (60 s by default): see a new one at once.
        mlflow_settings={"MLFLOW_WEBHOOK_CACHE_TTL": "1"},
    )
    yield stack.start()
    stack.stop()


def _until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _notices(stack: ProdStack, model_name: str) -> list:
    return [
        c
        for c in stack.slack.calls("chat.postMessage")
        if c.status == 200
        and c.params.get("text", "").startswith(f"{model_name} v")
        and not c.params.get("thread_ts")
    ]


def _send(stack: ProdStack, body: dict) -> int:
    raw = json.dumps(body).encode()
    url = f"{stack.webhooks_url}/hooks/training"
    return requests.post(url, data=raw, headers=signed_headers(raw), timeout=30).status_code


def _drained(stack: ProdStack) -> None:
    """Wait until every queued task has been run and acknowledged."""
    db = redis.Redis.from_url(stack.redis_url)
    _until(lambda: not db.llen(QUEUE) and not db.hlen("unacked"), "an idle queue", 90)


def _stage(stack: ProdStack, model_name: str, constant: float = 1.0) -> tuple[str, str]:
    """Train, send the event, wait for the notice; return the version and the notice's ts."""
    before = len(_notices(stack, model_name))
    run_id = log_model(stack.mlflow_url, constant=constant)
    assert _send(stack, {"model_name": model_name, "run_id": run_id}) == 202
    _until(lambda: len(_notices(stack, model_name)) > before, "a notice")
    client = MlflowClient(stack.mlflow_url)
    newest = max(
        client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version)
    )
    tag = "registry_bot.notice_ts"
    ts = _until(lambda: client.get_model_version(model_name, newest.version).tags.get(tag), tag)
    return str(newest.version), ts


def _approve(stack: ProdStack, model_name: str, version: str, user: str, ts: str) -> str:
    value = button_value(model_name, version)
    resp, url = click(
        stack.bot_url, stack.slack, user=user, action_id=APPROVE_ACTION, value=value, message_ts=ts
    )
    assert resp.status_code == 200, resp.text
    return url


def _said(stack: ProdStack, response_url: str) -> list[dict]:
    path = "/response/" + quote(response_url.rsplit("/", 1)[-1], safe="")
    return [c.params for c in stack.slack.calls("response_url") if c.path == path]


def _stages(stack: ProdStack, model_name: str) -> dict[str, str]:
    found = MlflowClient(stack.mlflow_url).search_model_versions(f"name = '{model_name}'")
    return {str(v.version): v.current_stage for v in found}


def _production(stack: ProdStack, model_name: str) -> list[str]:
    return sorted(v for v, stage in _stages(stack, model_name).items() if stage == "Production")


def _alias(stack: ProdStack, model_name: str) -> str:
    client = MlflowClient(stack.mlflow_url)
    return str(client.get_model_version_by_alias(model_name, "production").version)


def _promote(stack: ProdStack, model_name: str, constant: float) -> str:
    version, ts = _stage(stack, model_name, constant)
    _approve(stack, model_name, version, "UAPPROVER1", ts)
    _until(lambda: _production(stack, model_name) == [version], f"v{version} alone in Production")
    return version


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]


def test_the_services_run_as_in_production(prod):
    for service, argv in prod.commands.items():
        if service == "redis":
            continue  # redis-server rewrites its command line into its address
        for name in [n for n in prod.procs if n.split("-")[0] == service]:
            ran = prodstack.program(argv)
            assert _cmdline(prod.procs[name].pid)[: len(ran)] == ran
    assert len(prod.worker_names()) == 2
    for door in ("webhooks", "bot"):
        assert len(prod.pids(door)) == 1 + 2  # the gunicorn arbiter and its two workers
    assert len(prod.pids("mlflow")) >= 1 + 2  # the CLI, uvicorn's parent, two server workers
    assert len(prod.pids("postgres")) > 1  # the postmaster and its backends
    # The server comes from the test extra (pgserver's binaries), not from the machine.
    postmaster = Path(f"/proc/{prod.pids('postgres')[0]}/exe").resolve()
    assert "pgserver" in postmaster.parts, postmaster
    served = _cmdline(prod.procs["mlflow"].pid)
    assert served[served.index("--backend-store-uri") + 1].startswith(f"postgresql+{prod.driver}:")


def test_approve_promotes_and_archives_the_old_production(prod, model_name):
    v1 = _promote(prod, model_name, 1.0)
    v2, ts2 = _stage(prod, model_name, 2.0)
    _approve(prod, model_name, v2, "UAPPROVER2", ts2)
    _until(lambda: _stages(prod, model_name) == {v1: "Archived", v2: "Production"}, "v1 archived")
    _drained(prod)
    assert _alias(prod, model_name) == v2
    tags = MlflowClient(prod.mlflow_url).get_model_version(model_name, v1).tags
    assert tags["registry_bot.production_until"]
    mlflow.set_tracking_uri(prod.mlflow_url)
    served = mlflow.pyfunc.load_model(f"models:/{model_name}/Production")
    assert list(served.predict([[0.0]])) == [2.0]


def test_thirty_concurrent_deliveries_make_one_version_and_one_notice(prod, model_name):
    run_id = log_model(prod.mlflow_url, constant=3.0)
    body = {"model_name": model_name, "run_id": run_id}
    # Each delivery has its own webhook-id (as a sender's retries may), so only the lock
    # and the registry's record keep it to one version.
    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(lambda _: _send(prod, body), range(30)))
    assert statuses == [202] * 30
    _until(lambda: _notices(prod, model_name), "the notice")
    _drained(prod)
    assert _stages(prod, model_name) == {"1": "Staging"}
    assert len(_notices(prod, model_name)) == 1


def test_twenty_concurrent_approve_clicks_make_one_transition(prod, model_name):
    version, ts = _stage(prod, model_name)
    with ThreadPoolExecutor(20) as pool:
        urls = list(pool.map(lambda u: _approve(prod, model_name, version, u, ts), CLICKERS))
    _until(lambda: _production(prod, model_name) == [version], "Production")
    _drained(prod)
    told = [said for url in urls for said in _said(prod, url)]
    assert len(told) == 19 and all("already approved by" in t["text"] for t in told), told
    winner = MlflowClient(prod.mlflow_url).get_model_version(model_name, version).tags
    assert winner["registry_bot.decided_by"] in CLICKERS
    replies = [r for m in prod.slack.messages("CNOTICES") if m["ts"] == ts for r in m["replies"]]
    assert len([r for r in replies if "now Production" in r["text"]]) == 1


def test_two_versions_approved_at_once_through_two_workers_leave_one_production(prod, model_name):
    (v1, ts1), (v2, ts2) = _stage(prod, model_name, 1.0), _stage(prod, model_name, 2.0)
    _drained(prod)  # both workers idle, so each takes one of the two approvals
    logged = {name: len(prod.log(name)) for name in prod.worker_names()}
    clicks = [(v1, "UAPPROVER1", ts1), (v2, "UAPPROVER2", ts2)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda c: _approve(prod, model_name, c[0], c[1], c[2]), clicks))
    _until(lambda: len(_production(prod, model_name)) == 1, "a Production version")
    _drained(prod)
    for name, start in logged.items():
        taken = re.findall(r"registry_bot\.approve\[[^]]+\] received", prod.log(name)[start:])
        assert len(taken) == 1, f"{name} took {len(taken)} approvals"
    (winner,) = _production(prod, model_name)
    loser = v1 if winner == v2 else v2
    assert _stages(prod, model_name) == {winner: "Production", loser: "Archived"}
    assert _alias(prod, model_name) == winner


def test_rollback_returns_the_previous_production(prod, model_name):
    v1 = _promote(prod, model_name, 1.0)
    v2 = _promote(prod, model_name, 2.0)
    _, url = slash(prod.bot_url, prod.slack, f"rollback {model_name}", user="UAPPROVER2")
    plan = _until(lambda: _said(prod, url), "the rollback plan")[0]
    assert f"from v{v2} to v{v1}" in plan["text"]
    # Confirm asks for an optional reason in a modal; submitting it queues the rollback.
    confirm_with_reason(prod, prod.slack, plan, "UAPPROVER2", reason="back to the last good one")
    _until(lambda: _stages(prod, model_name) == {v1: "Production", v2: "Archived"}, "rollback")
    assert _alias(prod, model_name) == v1


def test_the_mlflow_native_webhook_stages_a_version_registered_elsewhere(prod, model_name):
    client = MlflowClient(prod.mlflow_url)
    hook = client.create_webhook(
        name=f"hook-{model_name}",
        url=f"{prod.webhooks_url}/hooks/mlflow",
        events=["model_version.created"],
        secret=MLFLOW_SECRET,
    )
    try:
        run_id = log_model(prod.mlflow_url, constant=7.0)
        time.sleep(1.2)  # past each server worker's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
        mlflow.set_tracking_uri(prod.mlflow_url)
        mv = mlflow.register_model(f"runs:/{run_id}/model", model_name)
        _until(lambda: _notices(prod, model_name), "the notice")
    finally:
        client.delete_webhook(hook.webhook_id)
    _drained(prod)
    assert _stages(prod, model_name) == {str(mv.version): "Staging"}
    assert len(_notices(prod, model_name)) == 1
