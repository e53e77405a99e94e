"""The doors under their production command (gunicorn, as docker-compose.yml runs them): every
line they write is one JSON object, and a request's lines carry its event id."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
import yaml

from devkit.prodstack import program
from devkit.slack_double import SlackDouble
from devkit.stack import free_port, stop, url_answers, wait_until
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import REPO, TOKEN, TRAINING_SECRET, click, signed_headers

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]


def production_command(service: str, port: int) -> list[str]:
    """Return the compose file's command for `service`, listening on 127.0.0.1:port."""
    argv = shlex.split(COMPOSE[service]["command"])
    assert argv[0] == "gunicorn", argv
    bind = argv.index("--bind") + 1
    argv[bind] = f"127.0.0.1:{port}"
    return program(argv)


@pytest.fixture(scope="module")
def own_slack() -> Iterator[SlackDouble]:
    """A Slack double of this module's own: no other test's faults or state in its answers."""
    double = SlackDouble(token=TOKEN, users={"UAPPROVER1": {"name": "ada"}})
    double.start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def doors(stacks, own_slack, tmp_path_factory):
    """Webhooks and bot under gunicorn with the compose commands; yield (stack, logs, urls)."""
    stack = stacks.make(LOG_LEVEL="INFO", SLACK_API_URL=own_slack.api_url)
    logs = tmp_path_factory.mktemp("gunicorn")
    procs, urls = {}, {}
    for service in ("webhooks", "bot"):
        port = free_port()
        with open(logs / f"{service}.log", "ab") as out:
            procs[service] = subprocess.Popen(
                production_command(service, port),
                env=stack.env,
                cwd=stack.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        urls[service] = f"http://127.0.0.1:{port}"
        wait_until(lambda u=urls[service]: url_answers(f"{u}/healthz", status=200), 60, service)
    yield stack, logs, urls
    for proc in procs.values():
        stop(proc)


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


def queued_event_ids(stack) -> set[str]:
    """Return the event ids of the tasks waiting in the stack's queue."""
    found = set()
    for raw in redis.Redis.from_url(stack.redis_url).lrange(stack.queue, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        found.add(body[1]["event_id"])
    return found


def test_every_line_of_both_doors_is_json_with_the_requests_event_id(doors, own_slack):
    stack, logs, urls = doors
    event = json.dumps({"model_name": f"m-{uuid.uuid4().hex[:8]}", "run_id": "r1"}).encode()
    sent = requests.post(
        f"{urls['webhooks']}/hooks/training",
        data=event,
        headers=signed_headers(event, secret=TRAINING_SECRET),
        timeout=10,
    )
    assert sent.status_code == 202, sent.text
    event_id = sent.json()["event_id"]
    answered, _ = click(
        urls["bot"],
        own_slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value("m", "1"),
    )
    assert answered.status_code == 200, answered.text
    # The bot answers once the listener acked; the listener queues the click just after.
    (click_id,) = wait_until(
        lambda: queued_event_ids(stack) - {event_id}, 10, "the click's task in the queue"
    )
    for service, wanted in (("webhooks", event_id), ("bot", click_id)):
        path = logs / f"{service}.log"
        wait_until(lambda p=path, w=wanted: w in p.read_text(), 10, f"{service}'s line")
        parsed = []
        for line in lines(path):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{service} wrote a line that is not JSON: {line!r}")
        assert any(entry.get("event_id") == wanted for entry in parsed), parsed
        assert any(entry["logger"].startswith("gunicorn") for entry in parsed)  # gunicorn's own
        assert {entry["level"] for entry in parsed} <= {"info", "warning"}, parsed
