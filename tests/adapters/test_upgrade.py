"""Upgrades: every task message an earlier release queued is run by today's worker.

A worker upgraded while messages wait in Redis takes them as the earlier release wrote
them: same task names, same keyword arguments, same envelope. tests/fixtures holds them
as each release queued them; a task renamed, or a keyword argument added without a
default or removed, fails here before it strands a queued click or event.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from registry.adapters import queue
from tests.support import CANARY_SECRET, wait_for

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures").glob("queued-by-*.json"))
TASKS_TODAY = {value for name, value in vars(queue).items() if name.startswith("TASK_")}
# Celery's own lines about a task it took: how it ended, or that no task has its name.
TRACE = re.compile(
    r"^Task (?P<task>[\w.]+)\[(?P<id>[\w-]+)\] (?P<outcome>(succeeded|retry|raised).*)", re.S
)
UNREGISTERED = "Received unregistered task"
# What calling a task with keyword arguments its signature no longer takes raises.
BAD_ARGUMENTS = re.compile(
    r"TypeError\(.*(unexpected keyword argument|missing \d+ required|positional argument)"
)


def messages(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["messages"]


def body_of(message: dict[str, Any]) -> list[Any]:
    return json.loads(base64.b64decode(message["body"]))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_each_recorded_message_is_what_its_reading_copy_says(path):
    for entry in messages(path):
        message = entry["message"]
        args, kwargs, _ = body_of(message)
        assert (message["headers"]["task"], args, kwargs) == (entry["task"], [], entry["kwargs"])
        assert message["properties"]["correlation_id"] == message["headers"]["id"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_no_task_an_earlier_release_queued_is_gone(path):
    assert {entry["task"] for entry in messages(path)} <= TASKS_TODAY


# Tasks added after the first release: no earlier release can have queued one.
ADDED_SINCE = {queue.TASK_GATE_REQUEST, queue.TASK_EVIDENCE}  # tasks 0.1 did not have


def test_the_first_release_recorded_every_task_it_had():
    first = {entry["task"] for entry in messages(FIXTURES[0])}
    assert FIXTURES[0].name == "queued-by-0.1.json" and first == TASKS_TODAY - ADDED_SINCE


def as_queued_on(message: dict[str, Any], queue_name: str, response_url: str) -> str:
    """Return a recorded message as this test's deployment would hold it.

    Only what belongs to a deployment or a moment changes: the queue (the fixture says
    registry-bot), a response URL (Slack's, which a test must never call: the double's
    instead) and an expiry (beat's sweep expires after a minute, long past by now).
    """
    moved = copy.deepcopy(message)
    moved["properties"]["delivery_info"]["routing_key"] = queue_name
    if moved["headers"].get("expires"):
        later = datetime.now(UTC) + timedelta(minutes=5)
        moved["headers"]["expires"] = later.isoformat()
    args, kwargs, embed = body_of(moved)
    if kwargs.get("response_url"):
        kwargs["response_url"] = response_url
    moved["body"] = base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()
    return json.dumps(moved)


def outcomes(log: str, ids: list[str]) -> dict[str, str]:
    """Return how the worker's log says each task id ended: the first word Celery said."""
    found: dict[str, str] = {}
    for line in log.splitlines():
        msg = json.loads(line).get("msg", "") if line.startswith("{") else ""
        if msg.startswith(UNREGISTERED):
            found.update({i: "unregistered" for i in ids if i in msg and i not in found})
        match = TRACE.match(msg)
        if match and match["id"] in ids:
            found.setdefault(match["id"], match["outcome"])
    return found


def ran(outcome: str) -> bool:
    """Say whether a task's own code ran: it was known, and took the arguments it was sent.

    Its code may still fail (the records it names are not in this test's registry); what
    matters here is that it started.
    """
    return outcome != "unregistered" and not BAD_ARGUMENTS.search(outcome)


def doctored(entry: dict[str, Any], how: str, **change: Any) -> dict[str, Any]:
    """Return a recorded message as a release that changed it would fail it: another task
    name, or one more keyword argument; with an id of its own."""
    message = copy.deepcopy(entry["message"])
    task_id = f"{message['headers']['id']}-{how}"
    message["headers"].update(id=task_id, task=change.get("task", entry["task"]))
    args, kwargs, embed = body_of(message)
    kwargs.update(change.get("kwargs", {}))
    message["body"] = base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()
    return message


@pytest.mark.slow
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_the_worker_runs_every_message_an_earlier_release_queued(path, stacks, slack):
    # Its own stack: the recorded sink delivery signs with a secret, and retries.
    stack = stacks.get(services=("worker",), EVENT_SINK_SECRET=CANARY_SECRET)
    recorded = messages(path)
    # The check itself: a renamed task and an argument the task does not take are caught.
    renamed = doctored(recorded[0], "renamed", task="registry_bot.renamed_later")
    grown = doctored(recorded[0], "grown", kwargs={"added_later": 1})
    answers = slack.response_url(f"upgrade-{path.stem}")
    sent = [e["message"] for e in recorded] + [renamed, grown]
    raw = [as_queued_on(m, stack.queue, answers) for m in sent]
    ids = [json.loads(r)["headers"]["id"] for r in raw]
    redis.Redis.from_url(stack.redis_url).lpush(stack.queue, *raw)

    ended = wait_for(
        lambda: (lambda found: found if len(found) == len(ids) else None)(
            outcomes(stack.log("worker"), ids)
        ),
        "an outcome for every message",
        timeout=120,
    )
    *old, renamed_outcome, grown_outcome = [ended[i] for i in ids]
    assert renamed_outcome == "unregistered" and not ran(grown_outcome), grown_outcome
    refused = [
        f"{entry['queued_by']} ({entry['task']}): {outcome}"
        for entry, outcome in zip(recorded, old, strict=True)
        if not ran(outcome)
    ]
    assert refused == [], "\n".join(refused)
