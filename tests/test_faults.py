"""Faults injected for real: killed workers, failing MLflow and Slack, floods of the same event."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from mlflow import MlflowClient

from devkit.stack import children
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import (
    SERVICES,
    FaultyProxy,
    click,
    log_model,
    notices_for,
    production_versions,
    signed_headers,
    stage,
    stage_of,
    updates_of,
    wait_for,
    wait_notice,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faults(stacks):
    """A stack of its own: these tests kill its worker processes."""
    return stacks.get(services=SERVICES, FAULTS="killable")


def kill_pool(stack) -> int:
    """SIGKILL every pool process of the stack's worker, as the OOM killer would."""
    pids = children(stack.procs["worker"].pid)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def replies_to(slack, ts: str) -> list[str]:
    return [r["text"] for m in slack.messages("CNOTICES") if m["ts"] == ts for r in m["replies"]]


def test_worker_killed_mid_registration_leaves_one_version_and_one_notice(
    faults, slack, mlflow_server, model_name
):
    # Slack takes the post, but the answer is late: the worker dies before hearing it.
    slack.set_delay("chat.postMessage", 8, after=True)
    try:
        run_id = log_model(mlflow_server, constant=1.0)
        assert faults.post_training({"model_name": model_name, "run_id": run_id}).status_code == 202
        wait_notice(slack, model_name)
        assert kill_pool(faults) >= 1
    finally:
        slack.set_delay("chat.postMessage", 0, after=True)
    client = MlflowClient(mlflow_server)
    wait_for(
        lambda: client.get_model_version(model_name, "1").tags.get("registry_bot.notice_ts"),
        "the rerun to adopt the notice",
        timeout=60,
    )
    time.sleep(1.0)
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert len(notices_for(slack, model_name)) == 1
    assert stage_of(mlflow_server, model_name, "1") == "Staging"


def test_worker_killed_mid_promotion_leaves_one_production(
    faults, slack, mlflow_server, model_name
):
    v1, ts1 = stage(faults, slack, mlflow_server, model_name, constant=1.0)
    click(
        faults.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, v1),
        message_ts=ts1,
    )
    wait_for(
        lambda: (
            MlflowClient(mlflow_server)
            .get_model_version(model_name, v1)
            .tags.get("registry_bot.announced")
        ),
        "v1 promoted",
    )
    v2, ts2 = stage(faults, slack, mlflow_server, model_name, constant=2.0)
    slack.set_delay("chat.update", 8, after=True)
    try:
        click(
            faults.bot_url,
            slack,
            user="UAPPROVER1",
            action_id=APPROVE_ACTION,
            value=button_value(model_name, v2),
            message_ts=ts2,
        )
        wait_for(lambda: updates_of(slack, ts2), "the notice update to start")
        assert kill_pool(faults) >= 1
    finally:
        slack.set_delay("chat.update", 0, after=True)
    client = MlflowClient(mlflow_server)
    wait_for(
        lambda: client.get_model_version(model_name, v2).tags.get("registry_bot.announced"),
        "the rerun to finish the promotion",
        timeout=60,
    )
    assert production_versions(mlflow_server, model_name) == [v2]
    assert stage_of(mlflow_server, model_name, v1) == "Archived"
    assert client.get_model_version(model_name, v1).tags["registry_bot.production_until"]
    log2 = json.loads(client.get_model_version(model_name, v2).tags["registry_bot.log"])
    assert [e["type"] for e in log2].count("promoted") == 1
    assert len([r for r in replies_to(slack, ts2) if "now Production" in r]) == 1


RECOVERY_LIMIT = 120.0  # SPEC 8: within 2 minutes of a worker running again


def test_whole_worker_killed_with_events_and_clicks_in_flight(faults, slack, mlflow_server):
    # Two versions awaiting a decision, and five runs about to be sent as events.
    clicked = [f"m-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    staged = {m: stage(faults, slack, mlflow_server, m) for m in clicked}
    events = {
        f"m-{uuid.uuid4().hex[:10]}": log_model(mlflow_server, constant=float(i)) for i in range(5)
    }
    # Slack takes each post and update but answers late, so the worker dies mid-task.
    slack.set_delay("chat.postMessage", 5, after=True)
    slack.set_delay("chat.update", 5, after=True)
    try:
        for model, run_id in events.items():
            assert faults.post_training({"model_name": model, "run_id": run_id}).status_code == 202
        for model, (version, ts) in staged.items():
            approve_click(faults, slack, model, version, ts)
        wait_for(
            lambda: held(faults) >= 2 and any(notices_for(slack, m) for m in events),
            "the worker to be mid-task",
            timeout=60,
        )
        assert faults.kill_worker() >= 3  # the main process and its two pool processes
    finally:
        slack.set_delay("chat.postMessage", 0, after=True)
        slack.set_delay("chat.update", 0, after=True)
    restarted = time.monotonic()
    faults.start("worker")
    client = MlflowClient(mlflow_server)
    wait_for(
        lambda: (
            all(noticed(client, m) for m in events) and all(announced(client, m) for m in clicked)
        ),
        "every event noticed and every click decided",
        timeout=RECOVERY_LIMIT,
    )
    took = time.monotonic() - restarted
    assert took <= RECOVERY_LIMIT, f"recovered {took:.0f}s after the restart"
    wait_for(lambda: not held(faults) and not redis_len(faults), "the queue to drain", timeout=60)
    for model in events:
        versions = client.search_model_versions(f"name = '{model}'")
        assert [(v.version, v.current_stage) for v in versions] == [("1", "Staging")]
        assert len(notices_for(slack, model)) == 1
    for model, (version, ts) in staged.items():
        assert production_versions(mlflow_server, model) == [version]
        log = json.loads(client.get_model_version(model, version).tags["registry_bot.log"])
        assert [e["type"] for e in log].count("promoted") == 1
        assert len([r for r in replies_to(slack, ts) if "now Production" in r]) == 1


def approve_click(stack, slack, model: str, version: str, ts: str) -> None:
    resp, _ = click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value(model, version),
        message_ts=ts,
    )
    assert resp.status_code == 200


def noticed(client: MlflowClient, model: str) -> bool:
    versions = client.search_model_versions(f"name = '{model}'")
    return any(v.tags.get("registry_bot.notice_ts") for v in versions)


def announced(client: MlflowClient, model: str) -> bool:
    versions = client.search_model_versions(f"name = '{model}'")
    return any(v.tags.get("registry_bot.announced") for v in versions)


def held(stack) -> int:
    """Count the messages of the stack's queue that a worker took and has not acked."""
    import redis

    unacked = redis.Redis.from_url(stack.redis_url).hvals("unacked")
    # Other stacks and sessions may share the database: count this queue's only.
    return sum(1 for raw in unacked if json.loads(raw)[2] == stack.queue)


def test_an_event_delivered_fifty_times_at_once(stack, slack, mlflow_server, model_name):
    run_id = log_model(mlflow_server, constant=1.0)
    body = json.dumps({"model_name": model_name, "run_id": run_id}).encode()
    same = signed_headers(body, msg_id=f"msg_flood_{model_name}")

    def send(i: int):
        headers = same if i % 2 else signed_headers(body)  # half the same id, half new ids
        return stack.post_training(body, headers=headers).json()["status"]

    with ThreadPoolExecutor(25) as pool:
        statuses = list(pool.map(send, range(50)))
    assert statuses.count("queued") == 26 and statuses.count("duplicate") == 24
    wait_notice(slack, model_name)
    client = MlflowClient(mlflow_server)
    wait_for(
        lambda: client.get_model_version(model_name, "1").tags.get("registry_bot.notice_ts"),
        "notice tag",
    )
    deadline = time.monotonic() + 60
    while redis_len(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert len(notices_for(slack, model_name)) == 1


def redis_len(stack) -> int:
    import redis

    return redis.Redis.from_url(stack.redis_url).llen(stack.queue)


def test_two_versions_approved_at_the_same_moment(stack, stacks, slack, mlflow_server, model_name):
    loop = stacks.get(services=SERVICES)
    v1, ts1 = stage(loop, slack, mlflow_server, model_name, constant=1.0)
    v2, ts2 = stage(loop, slack, mlflow_server, model_name, constant=2.0)
    with ThreadPoolExecutor(2) as pool:
        list(
            pool.map(
                lambda a: click(
                    loop.bot_url,
                    slack,
                    user="UAPPROVER1",
                    action_id=APPROVE_ACTION,
                    value=button_value(model_name, a[0]),
                    message_ts=a[1],
                ),
                [(v1, ts1), (v2, ts2)],
            )
        )
    client = MlflowClient(mlflow_server)
    for v in (v1, v2):
        wait_for(
            lambda v=v: client.get_model_version(model_name, v).tags.get("registry_bot.announced"),
            f"v{v} decided",
        )
    assert len(production_versions(mlflow_server, model_name)) == 1
    stages = sorted(stage_of(mlflow_server, model_name, v) for v in (v1, v2))
    assert stages == ["Archived", "Production"]


def test_slack_500s_are_retried_without_duplicates(stack, slack, mlflow_server, model_name):
    run_id = log_model(mlflow_server, constant=1.0)
    slack.fail_next("chat.postMessage", status=500, count=2)
    assert stack.post_training({"model_name": model_name, "run_id": run_id}).status_code == 202
    wait_notice(slack, model_name)
    time.sleep(1.0)
    assert len(notices_for(slack, model_name)) == 1
    assert len([c for c in slack.calls("chat.postMessage") if c.status == 500]) >= 2


def outsider_approves(loop, slack, model_name: str, version: str, ts: str) -> str:
    """Click Approve as a non-approver; return the path of the click's response URL."""
    resp, url = click(
        loop.bot_url,
        slack,
        user="UOUTSIDER",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    assert resp.status_code == 200
    return "/response/" + url.rsplit("/", 1)[-1]


def test_a_refusal_reaches_the_clicker_through_slack_500s(stacks, slack, mlflow_server, model_name):
    loop = stacks.get(services=SERVICES)
    version, ts = stage(loop, slack, mlflow_server, model_name)
    slack.fail_next("response_url", status=500, count=2)
    path = outsider_approves(loop, slack, model_name, version, ts)
    told = wait_for(
        lambda: [c for c in slack.calls("response_url") if c.path == path and c.status == 200],
        "the refusal",
    )
    assert "not one" in told[0].params["text"]
    assert len([c for c in slack.calls("response_url") if c.path == path]) == 3


def test_a_refusal_the_response_url_keeps_refusing_is_told_with_an_ephemeral(
    stacks, slack, mlflow_server, model_name
):
    loop = stacks.get(services=SERVICES)
    version, ts = stage(loop, slack, mlflow_server, model_name)
    posted_before = len(slack.calls("chat.postEphemeral"))
    slack.fail_next("response_url", status=429, retry_after=1, count=4)  # past the retries
    path = outsider_approves(loop, slack, model_name, version, ts)
    told = wait_for(
        lambda: [
            c
            for c in slack.calls("chat.postEphemeral")[posted_before:]
            if c.status == 200 and c.params.get("user") == "UOUTSIDER"
        ],
        "the refusal as an ephemeral",
    )
    assert "not one" in told[0].params["text"] and told[0].params["channel"] == "CNOTICES"
    assert [c.status for c in slack.calls("response_url") if c.path == path] == [429] * 4


def test_a_refusal_slack_refuses_both_ways_is_handed_to_the_worker(
    stacks, slack, mlflow_server, model_name
):
    loop = stacks.get(services=SERVICES)
    version, ts = stage(loop, slack, mlflow_server, model_name)
    slack.fail_next("response_url", status=429, retry_after=1, count=4)  # past the retries
    slack.fail_next("chat.postEphemeral", status=500, count=4)
    path = outsider_approves(loop, slack, model_name, version, ts)
    told = wait_for(
        lambda: [c for c in slack.calls("response_url") if c.path == path and c.status == 200],
        "the refusal, told by the worker",
        timeout=60,
    )
    assert "not one" in told[0].params["text"]
    assert [c.status for c in slack.calls("response_url") if c.path == path] == [429] * 4 + [200]


def test_an_answer_slack_keeps_refusing_fails_the_task_so_that_it_retries(slack):
    from registry.adapters.slack import ResponseUrlFailed, SlackNotifier, web_client
    from registry.ports.services import Recipient
    from registry.rules.settings import Settings
    from worker.tasks import is_transient

    settings = Settings("x", slack_bot_token=slack.token, slack_api_url=slack.api_url)
    notifier = SlackNotifier(web_client(settings), "CNOTICES")
    to = Recipient("CNOTICES", "UAPPROVER1", slack.response_url(f"tell-{uuid.uuid4().hex}"))
    slack.fail_next("response_url", status=500, count=4)  # one more than the client retries
    with pytest.raises(ResponseUrlFailed) as failed:
        notifier.tell(to, "Your approval is counted.")
    assert is_transient(failed.value)
    notifier.tell(to, "Your approval is counted.")  # the task's retry
    path = "/response/" + to.response_url.rsplit("/", 1)[-1]
    statuses = [c.status for c in slack.calls("response_url") if c.path == path]
    assert statuses == [500, 500, 500, 500, 200]


@pytest.fixture(scope="module")
def mlflow_proxy(mlflow_server):
    proxy = FaultyProxy(mlflow_server)
    yield proxy
    proxy.close()


@pytest.mark.parametrize(("mode", "count"), [("500", 3), ("stall", 2)])
def test_mlflow_failing_is_retried_and_visible(
    stacks, slack, mlflow_server, mlflow_proxy, model_name, mode, count
):
    stack = stacks.get(
        services=("worker", "webhooks"),
        MLFLOW_TRACKING_URI=mlflow_proxy.url,
        MLFLOW_HTTP_REQUEST_TIMEOUT="2",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    run_id = log_model(mlflow_server, constant=1.0)
    mlflow_proxy.fail(mode, count, stall=5.0)
    resp = stack.post_training({"model_name": model_name, "run_id": run_id})
    event_id = resp.json()["event_id"]
    wait_notice(slack, model_name, timeout=60)
    assert len(MlflowClient(mlflow_server).search_model_versions(f"name = '{model_name}'")) == 1
    assert len(notices_for(slack, model_name)) == 1
    retries = [
        json.loads(line)
        for line in stack.log("worker").splitlines()
        if line.startswith("{") and "transient failure" in line
    ]
    assert any(r.get("event_id") == event_id and r.get("model") == model_name for r in retries)


def test_mlflow_down_then_back(stacks, slack, mlflow_server, model_name):
    proxy = FaultyProxy(mlflow_server)
    try:
        stack = stacks.get(
            services=("worker", "webhooks"),
            MLFLOW_TRACKING_URI=proxy.url,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        )
        run_id = log_model(mlflow_server, constant=1.0)
        proxy.stop()
        resp = stack.post_training({"model_name": model_name, "run_id": run_id})
        assert resp.status_code == 202  # the front door does not need MLflow
        event_id = resp.json()["event_id"]
        wait_for(
            lambda: event_id in stack.log("worker") and "transient failure" in stack.log("worker"),
            "a visible retry naming the event",
            timeout=30,
        )
        proxy.start()
        wait_notice(slack, model_name, timeout=90)
        assert len(notices_for(slack, model_name)) == 1
    finally:
        proxy.close()


def worker_said(stack, event_id: str, words: str) -> list[dict]:
    """Return the worker's log lines about `event_id` whose message holds `words`."""
    lines = (json.loads(line) for line in stack.log("worker").splitlines() if line.startswith("{"))
    return [r for r in lines if r.get("event_id") == event_id and words in r.get("msg", "")]


def test_a_worker_that_lost_its_lock_stops_before_its_next_write_and_runs_again(
    stacks, slack, mlflow_server, mlflow_proxy, model_name
):
    stack = stacks.get(services=("worker", "webhooks"), MLFLOW_TRACKING_URI=mlflow_proxy.url)
    run_id = log_model(mlflow_server, constant=1.0)
    # Slack takes the notice but answers 8 s late: the task waits there, holding the lock.
    # Long enough for the keeper's next renewal (every 5 s) to find the key gone; short of
    # the Slack client's 10 s timeout, past which the post would fail and be retried.
    slack.set_delay("chat.postMessage", 8, after=True)
    try:
        resp = stack.post_training({"model_name": model_name, "run_id": run_id})
        event_id = resp.json()["event_id"]
        wait_notice(slack, model_name)
        # The lock lapses under the waiting task (a stall, a Redis failover): its key is gone.
        gone_at = time.time()
        assert redis.Redis.from_url(stack.redis_url).delete(f"registry-bot:lock:{model_name}")
        [lost] = wait_for(
            lambda: worker_said(stack, event_id, "stopped before"), "the lost lock", timeout=30
        )
    finally:
        slack.set_delay("chat.postMessage", 0, after=True)
    assert lost["level"] == "error" and lost["model"] == model_name
    # Its next registry call after Slack's answer was the write it stopped before.
    sent = [path for at, path, _ in list(mlflow_proxy.hits) if gone_at <= at <= lost["at"]]
    assert not sent, f"MLflow heard from a task that had lost its lock: {sent}"
    wait_for(lambda: worker_said(stack, event_id, "task done"), "the task's rerun", timeout=30)
    time.sleep(1.0)
    assert len(worker_said(stack, event_id, "transient failure")) == 1  # run again once
    assert len(worker_said(stack, event_id, "task done")) == 1
    client = MlflowClient(mlflow_server)
    [mv] = client.search_model_versions(f"name = '{model_name}'")
    [notice] = [m for m in slack.messages("CNOTICES") if m["text"].startswith(f"{model_name} v")]
    assert len(notices_for(slack, model_name)) == 1 and mv.current_stage == "Staging"
    tags = client.get_model_version(model_name, mv.version).tags
    assert tags["registry_bot.notice_ts"] == notice["ts"] and tags["registry_bot.noticed_at"]
    assert tags["registry_bot.event_id"] == event_id
    assert tags["registry_bot.notice_channel"] == "CNOTICES"
    assert [e["type"] for e in json.loads(tags["registry_bot.log"])] == ["staged"]
