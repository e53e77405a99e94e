"""Probes: what each service's readiness and liveness probe reads, and that it tells the truth
(the worker and the scheduler by their heartbeat files, the doors by /healthz and /livez);
and what a stopped worker does with the task it holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests

from devkit.stack import free_port, start_redis, steady_port, stop, wait_until
from registry.process.heartbeat import EVERY, WITHIN, Heartbeat, main
from tests.support import log_model, notices_for

pytestmark = pytest.mark.slow


def probe(env: dict[str, str], service: str, kind: str) -> subprocess.CompletedProcess:
    """Run the probe command the manifests and compose give, in the service's environment."""
    argv = [sys.executable, "-m", "registry.process.heartbeat", service, kind]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)


def passes(env: dict[str, str], service: str, kind: str) -> bool:
    return probe(env, service, kind).returncode == 0


# --- the heartbeat files alone ------------------------------------------------------------


def test_a_heartbeat_is_fresh_until_it_is_older_than_its_limit(tmp_path):
    heart = Heartbeat("worker", tmp_path)
    assert heart.problem("live") == "worker is not live: no heartbeat"
    heart.beat(ready=False)
    now = time.time()
    assert heart.problem("live", now) == ""
    assert heart.problem("ready", now) == "worker is not ready: no heartbeat"
    heart.beat(ready=True)
    assert heart.problem("ready", now + WITHIN["ready"] - 1) == ""
    late = heart.problem("ready", now + WITHIN["ready"] + 5)
    assert late.startswith("worker is not ready: last beat 3") and "(at most 30 s)" in late
    heart.unready()
    assert heart.problem("ready", now) == "worker is not ready: no heartbeat"
    heart.reset()
    assert heart.problem("live", now) == "worker is not live: no heartbeat"


def test_the_probe_command_exits_0_1_or_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what TMPDIR would say
    assert main(["scheduler", "live"]) == 1
    assert "scheduler is not live: no heartbeat" in capsys.readouterr().err
    Heartbeat("scheduler").beat(ready=True)
    assert main(["scheduler", "live"]) == main(["scheduler", "ready"]) == 0
    assert main(["nobody", "live"]) == 2 and "usage:" in capsys.readouterr().err


# --- the services -------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path):
    """A Redis this test may stop and start again; yield (url, restart)."""
    port = steady_port()  # restart() must find it free
    server = {"proc": start_redis(port, tmp_path / "redis")}

    def restart(up: bool) -> None:
        stop(server.pop("proc", None))
        if up:
            server["proc"] = start_redis(port, tmp_path / "redis")

    yield f"redis://127.0.0.1:{port}", restart
    stop(server.get("proc"))


def private_env(stack, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The stack's environment with a temporary directory of the service's own (as a
    container has), where its heartbeat files go."""
    own = tmp_path / "tmp"
    own.mkdir(exist_ok=True)
    return {**stack.env, "TMPDIR": str(own), **settings}


def test_the_worker_is_ready_while_it_consumes_and_live_while_its_loop_runs(
    stacks, own_redis, tmp_path
):
    url, restart = own_redis
    stack = stacks.make(redis_base=url)
    stack.env = private_env(stack, tmp_path)
    assert not passes(stack.env, "worker", "live")  # nothing started yet
    stack.start("worker")
    try:
        wait_until(lambda: passes(stack.env, "worker", "ready"), 30, "a ready worker")
        restart(up=False)
        # Not ready at once (the consumer stopped), yet live: a restart would wait the same.
        wait_until(lambda: not passes(stack.env, "worker", "ready"), 15, "an unready worker")
        time.sleep(EVERY + 2)
        assert passes(stack.env, "worker", "live"), probe(stack.env, "worker", "live").stderr
        restart(up=True)
        wait_until(lambda: passes(stack.env, "worker", "ready"), 60, "ready again")
        # A frozen worker beats no more: its heartbeat comes from the process's own loop.
        live = Path(stack.env["TMPDIR"]) / "registry-bot-worker.live"
        os.kill(stack.procs["worker"].pid, signal.SIGSTOP)
        try:
            before = live.stat().st_mtime
            time.sleep(EVERY + 2)
            assert live.stat().st_mtime == before
        finally:
            os.kill(stack.procs["worker"].pid, signal.SIGCONT)
    finally:
        stack.stop()


def test_the_scheduler_is_live_and_ready_while_it_ticks_with_redis_up(stacks, tmp_path):
    stack = stacks.make()
    env = private_env(stack, tmp_path, BEAT_SCHEDULE_FILE=str(tmp_path / "schedule"))
    with open(tmp_path / "beat.log", "wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "worker", "beat"], env=env, stdout=log, stderr=log
        )
    try:
        wait_until(lambda: passes(env, "scheduler", "ready"), 30, "a ready scheduler")
        assert passes(env, "scheduler", "live")
    finally:
        stop(beat)


def test_a_socket_mode_bot_is_ready_while_linked_to_slack(stacks, slack, tmp_path):
    stack = stacks.make(SLACK_APP_TOKEN=slack.app_token, SLACK_TRANSPORT="socket")
    stack.env = private_env(stack, tmp_path)
    stack.start("bot")
    try:
        wait_until(lambda: passes(stack.env, "bot", "ready"), 30, "a ready Socket Mode bot")
        assert passes(stack.env, "bot", "live")
    finally:
        stack.stop()


def test_the_doors_stay_live_with_redis_down_and_say_they_are_not_ready(stacks, own_redis):
    url, restart = own_redis
    stack = stacks.make(redis_base=url)
    stack.start("webhooks", "bot")
    try:
        for door in (stack.webhooks_url, stack.bot_url):
            assert requests.get(f"{door}/healthz", timeout=5).status_code == 200
        restart(up=False)
        for door in (stack.webhooks_url, stack.bot_url):
            assert requests.get(f"{door}/healthz", timeout=5).status_code == 503
            assert requests.get(f"{door}/livez", timeout=5).status_code == 200
    finally:
        stack.stop()


# --- graceful shutdown ---------------------------------------------------------------------


def test_a_stopped_worker_hands_back_the_task_it_holds(stacks, slack, mlflow_server, model_name):
    # MLflow unreachable: the event's task fails, and waits in the worker for its retry.
    stack = stacks.make(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    stack.start("worker", "webhooks")
    try:
        run_id = log_model(mlflow_server, constant=1.0)
        assert stack.post_training({"model_name": model_name, "run_id": run_id}).status_code == 202
        wait_until(lambda: "transient failure, retrying" in stack.log("worker"), 60, "a retry")
        worker = stack.procs["worker"]
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)  # what Kubernetes and compose send first
        assert worker.wait(30) == 0
        took = time.monotonic() - stopped_at
        # Handed back, not lost: back in the queue (or held by Redis for the next worker).
        held = redis.Redis.from_url(stack.redis_url)
        assert held.llen(stack.queue) + held.hlen("unacked") >= 1
        stack.procs.pop("worker")
        stack.env["MLFLOW_TRACKING_URI"] = mlflow_server  # MLflow is back
        stack.start("worker")
        wait_until(lambda: notices_for(slack, model_name), 90, "the notice, by the next worker")
    finally:
        stack.stop()
    assert took < 20, f"the idle worker took {took:.1f} s to stop"
