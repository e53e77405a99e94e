"""Shared fixtures: real Redis, a real MLflow server, the Slack double, running services."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from devkit.slack_double import SlackDouble
from devkit.stack import find_or_start_redis, free_port, start_mlflow_server, stop
from tests.support import SERVICES, SLACK_SIGNING_SECRET, TOKEN, Stack, StackFactory

USERS = {
    "UAPPROVER1": {"name": "ada", "email": "ada@example.com"},
    "UAPPROVER2": {"name": "grace", "email": "grace@example.com"},
    "UREQUESTER": {"name": "rita", "email": "rita@example.com"},
    "UOUTSIDER": {"name": "olaf", "email": "olaf@example.com"},
    "UGROUPIE": {"name": "gus", "email": "gus@example.com"},
    **{f"UCLICK{i:02d}": {"name": f"clicker{i}", "email": f"c{i}@example.com"} for i in range(20)},
}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """Use the Redis at REDIS_URL (or 127.0.0.1:6379) when it answers; else start one."""
    base, proc = find_or_start_redis(tmp_path_factory.mktemp("redis"))
    yield base
    stop(proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """Run one real `mlflow server` on SQLite for the session."""
    port = free_port()
    # The server caches its webhook list (60 s by default): keep it short so a test's
    # webhook is seen at once.
    proc = start_mlflow_server(
        port, tmp_path_factory.mktemp("mlflow"), env={"MLFLOW_WEBHOOK_CACHE_TTL": "1"}
    )
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="session")
def slack() -> Iterator[SlackDouble]:
    """Run the Slack Web API double for the session."""
    double = SlackDouble(token=TOKEN, users=USERS, usergroups={"SAPPROVERS": ["UGROUPIE"]})
    double.start()
    yield double
    double.stop()


@pytest.fixture(scope="session")
def stacks(redis_url, mlflow_server, slack, tmp_path_factory) -> Iterator[StackFactory]:
    """Start worker/webhooks/bot processes per distinct configuration, shared by tests."""
    factory = StackFactory(
        redis_base=redis_url,
        mlflow_uri=mlflow_server,
        slack=slack,
        workdir=tmp_path_factory.mktemp("stacks"),
        base_env={
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
            "SLACK_CHANNEL": "CNOTICES",
            "APPROVERS": "UAPPROVER1,UAPPROVER2," + ",".join(f"UCLICK{i:02d}" for i in range(20)),
        },
    )
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def stack(stacks) -> Stack:
    """The default configuration: stages mode, one approval."""
    return stacks.get()


@pytest.fixture(scope="module")
def loop(stacks) -> Stack:
    """The default stack with the bot running too."""
    return stacks.get(services=SERVICES)


@pytest.fixture
def model_name() -> str:
    """Return a model name no other test uses."""
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(redis_url) -> redis.Redis:
    """A client on the default stack's database."""
    return redis.Redis.from_url(f"{redis_url}/1")


def pytest_terminal_summary(terminalreporter) -> None:
    """Report how fast the bot answered Slack (HTTP and Socket Mode), and the burst's time."""
    from tests.support import FIGURES, SLACK_ANSWER_TIMES, SOCKET_ACK_TIMES

    for what, found in (
        ("Slack requests answered", SLACK_ANSWER_TIMES),
        ("Socket Mode envelopes acknowledged", SOCKET_ACK_TIMES),
    ):
        if found:
            times = sorted(found)
            terminalreporter.write_line(
                f"{what}: {len(times)}, median {times[len(times) // 2] * 1000:.0f} ms,"
                f" slowest {times[-1] * 1000:.0f} ms (limit 3000 ms)"
            )
    for line in FIGURES:
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the `test_zz_*` checks last of the session, so they see every log it wrote."""
    last = [item for item in items if item.name.startswith("test_zz_")]
    items[:] = [item for item in items if item not in last] + last
