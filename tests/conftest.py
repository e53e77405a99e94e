"""Shared fixtures: real Redis, a real MLflow server, the Slack double, running services."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from devkit.slack_double import Call, SlackDouble, watch_refusals
from devkit.stack import find_or_start_redis, free_port, start_mlflow_server, start_redis, stop
from tests.support import SERVICES, SLACK_SIGNING_SECRET, TOKEN, Stack, StackFactory

# MLflow's client telemetry sets and unsets an environment variable from a thread of its
# own; a test process copying its environment meanwhile (every service it starts) can then
# fail an MLflow call with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' (seen once in a parallel
# run). The tests send no telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

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
    """Use the Redis at REDIS_URL (or 127.0.0.1:6379) when it answers; else start one.

    Each process of a parallel run (pytest-xdist) starts a Redis of its own: tests flush
    their databases, and no process may flush another's queues.
    """
    workdir = tmp_path_factory.mktemp("redis")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        port = free_port()
        proc = start_redis(port, workdir)
        yield f"redis://127.0.0.1:{port}"
        stop(proc)
        return
    base, proc = find_or_start_redis(workdir)
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


# Every message, view or answer a Slack double refused for its content (Slack's limits),
# as "where: method error reasons"; each is claimed by the test it happened during.
REFUSED: list[str] = []
UNCLAIMED: list[str] = []  # refused between tests: no test can be failed for it


def _heard_refusal(double: SlackDouble, call: Call) -> None:
    body = call.response if isinstance(call.response, dict) else {}
    reasons = "; ".join(body.get("errors") or [])[:500]
    REFUSED.append(f"{call.method} {call.error} {reasons}".strip())


watch_refusals(_heard_refusal)


@pytest.fixture(autouse=True)
def slack_took_everything(request) -> Iterator[None]:
    """Fail the test during which a Slack double refused a message, view or answer for its
    content (invalid_blocks, msg_too_long, invalid_arguments), unless the test is marked
    `slack_refuses(<error>…)`: the product must never send what Slack would refuse."""
    UNCLAIMED.extend(REFUSED)
    REFUSED.clear()
    yield
    found, REFUSED[:] = list(REFUSED), []
    marker = request.node.get_closest_marker("slack_refuses")
    expected = set(marker.args) if marker else set()
    unexpected = [r for r in found if not marker or (expected and r.split()[1] not in expected)]
    if unexpected:
        pytest.fail("Slack would refuse what the product sent:\n" + "\n".join(unexpected))


# What the processes of a parallel run measured, gathered by the controlling one.
GATHERED: dict[str, list] = {"answers": [], "acks": [], "figures": [], "refused": []}


def pytest_sessionfinish(session) -> None:
    """Fail the session if Slack refused content between tests; in a pytest-xdist worker,
    hand what it measured and saw refused to the controlling process."""
    from tests.support import FIGURES, SLACK_ANSWER_TIMES, SOCKET_ACK_TIMES

    unclaimed = UNCLAIMED + REFUSED
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["registry_bot_measured"] = json.dumps(
            {
                "answers": SLACK_ANSWER_TIMES,
                "acks": SOCKET_ACK_TIMES,
                "figures": FIGURES,
                "refused": unclaimed,
            }
        )
    elif unclaimed + GATHERED["refused"] and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: known only with the plugin
def pytest_testnodedown(node, error) -> None:
    """In the controlling process, gather what a finished worker measured."""
    measured = json.loads(getattr(node, "workeroutput", {}).get("registry_bot_measured", "{}"))
    for key, found in measured.items():
        GATHERED[key].extend(found)


def pytest_terminal_summary(terminalreporter) -> None:
    """Report how fast the bot answered Slack (HTTP and Socket Mode), and the burst's time."""
    from tests.support import FIGURES, SLACK_ANSWER_TIMES, SOCKET_ACK_TIMES

    for what, found in (
        ("Slack requests answered", SLACK_ANSWER_TIMES + GATHERED["answers"]),
        ("Socket Mode envelopes acknowledged", SOCKET_ACK_TIMES + GATHERED["acks"]),
    ):
        if found:
            times = sorted(found)
            terminalreporter.write_line(
                f"{what}: {len(times)}, median {times[len(times) // 2] * 1000:.0f} ms,"
                f" slowest {times[-1] * 1000:.0f} ms (limit 3000 ms)"
            )
    for line in FIGURES + GATHERED["figures"]:
        terminalreporter.write_line(line)
    for refused in UNCLAIMED + REFUSED + GATHERED["refused"]:
        terminalreporter.write_line(f"Slack refused between tests (session fails): {refused}")


# The modules that take a minute or more, longest first (their setup and tests together, from
# a full parallel run on 2 cores): collected first, so that a parallel run started with
# `--no-loadscope-reorder` (as `make test` does) hands them out first and the short modules
# fill the gaps, instead of one process running the last long module alone.
LONG_MODULES = (
    "test_outage.py",  # about 250 s: an MLflow outage of 150 s, then one past RETRY_FOR
    "test_production_shape.py",  # about 240 s
    "test_faults.py",  # 230 s
    "test_demo.py",  # 210 s
    "test_guard_flow.py",  # 135 s
    "test_serving.py",  # 135 s
    "test_commands.py",  # 110 s
    "test_probes.py",  # 100 s: a Redis stopped under a worker, a worker stopped with a retry
    "test_approvals.py",  # 105 s
    "test_soak.py",  # 100 s
    "test_burst.py",  # 90 s
    "test_governance_flow.py",  # 80 s
    "test_policy_flow.py",  # 75 s
    "test_record.py",  # 65 s
    "test_fail_closed.py",  # 60 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the long modules first; run the `test_zz_*` checks last of the session (of
    its process, in a parallel run), so they see every log it wrote."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: each module's own order is kept
    last = [item for item in items if item.name.startswith("test_zz_")]
    items[:] = [item for item in items if item not in last] + last
