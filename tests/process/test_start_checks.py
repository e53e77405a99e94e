"""Checks at start (SPEC 8): each service says each Slack setup problem in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devkit.slack_double import SlackDouble
from devkit.stack import free_port, service_env, stop
from registry.adapters.slack import web_client
from registry.process.preflight import (
    EMPTY_GROUP,
    NO_CHANNEL,
    NO_GROUP,
    NO_SCOPE,
    NOT_IN,
    TIMEOUT,
    UNANSWERED,
    Finding,
    ask_slack,
    channel_finding,
    channels_named,
    check,
    group_finding,
    groups_named,
    refusal_finding,
    token_finding,
)
from registry.rules.policy import load_policy
from registry.rules.settings import Settings, SettingsError
from tests.support import SLACK_SIGNING_SECRET, Stack

TOKEN = "xoxb-start-checks"
POLICY = """\
models:
  fraud:
    channel: C0FRAUD
    approvals:
      - {group: S0NOSUCH, count: 1}
"""


@pytest.fixture(scope="module")
def own_slack() -> Iterator[SlackDouble]:
    """A Slack double of this module's own: the bot is not in C0FRAUD there."""
    with SlackDouble(token=TOKEN, usergroups={"SAPPROVERS": ["UADA"]}) as double:
        double.leave("C0FRAUD")
        yield double


def settings_env(redis_url: str, slack_api_url: str, tmp_path: Path, **extra: str) -> dict:
    """Return a service's environment: the policy above, this module's Slack, its own queue."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = dict(
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
        REDIS_URL=f"{redis_url}/14",
        REGISTRY_BOT_QUEUE=f"start-checks-{uuid.uuid4().hex[:8]}",
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_SIGNING_SECRET=SLACK_SIGNING_SECRET,
        SLACK_CHANNEL="CNOTICES",
        SLACK_API_URL=slack_api_url,
        APPROVER_GROUP="SAPPROVERS",
        POLICY_FILE=str(policy),
        BOT_PORT=str(free_port()),
    )
    return service_env(**{**settings, **extra})


@pytest.fixture
def started(tmp_path) -> Iterator:
    """Start one service with an environment; stop it after the test."""
    stacks: list[Stack] = []

    def start(service: str, env: dict) -> Stack:
        stack = Stack(name=f"start-{service}", env=env, workdir=tmp_path)
        stacks.append(stack)
        stack.start(service)  # waits until the worker is ready, the bot serves
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def warnings(log: str) -> list[str]:
    """Return the messages of the warning lines in a service's JSON log."""
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [e["msg"] for e in entries if e.get("level") == "warning"]


def naming(lines: list[str], what: str) -> list[str]:
    return [line for line in lines if what in line]


# -- real starts against the Slack double ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("service", ["worker", "bot"])
def test_a_channel_the_bot_is_not_in_and_an_unknown_group_are_one_warning_each(
    service, own_slack, redis_url, started, tmp_path
):
    stack = started(service, settings_env(redis_url, own_slack.api_url, tmp_path))
    said = warnings(stack.log(service))
    [channel] = naming(said, "C0FRAUD")
    assert "not in" in channel and "fraud" in channel, channel
    [group] = naming(said, "S0NOSUCH")
    assert "does not exist" in group, group
    # The channel and group that are fine are not mentioned.
    assert naming(said, "CNOTICES") == naming(said, "SAPPROVERS") == []


@pytest.mark.slow
@pytest.mark.parametrize("service", ["worker", "bot"])
def test_slack_unreachable_at_start_is_a_warning_and_the_service_starts(
    service, redis_url, started, tmp_path
):
    nowhere = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there
    stack = started(service, settings_env(redis_url, nowhere, tmp_path))
    [line] = naming(warnings(stack.log(service)), "Slack")
    assert "did not answer" in line and "not checked" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("service", ["worker", "bot"])
def test_a_token_slack_refuses_stops_the_service_with_one_line(
    service, own_slack, redis_url, tmp_path
):
    env = settings_env(redis_url, own_slack.api_url, tmp_path, SLACK_BOT_TOKEN="xoxb-revoked")
    result = subprocess.run(
        [sys.executable, "-m", service],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SLACK_BOT_TOKEN" in lines[0] and "invalid_auth" in lines[0], lines[0]


# -- the scheduler ------------------------------------------------------------------------


def start_beat(env: dict, cwd: Path) -> subprocess.Popen:
    with open(cwd.parent / "beat.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "beat"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_sweep(redis_url: str, queue: str, beat: subprocess.Popen, log: Path) -> None:
    """Wait until beat has queued a sweep (it exits 2 on bad settings: say why then)."""
    import redis

    from devkit.stack import wait_until
    from registry.adapters.queue import TASK_SWEEP

    client = redis.Redis.from_url(redis_url)

    def swept() -> bool:
        if beat.poll() is not None:
            raise AssertionError(f"beat exited {beat.returncode}: {log.read_text()[-2000:]}")
        queued = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
        return any(m["headers"]["task"] == TASK_SWEEP for m in queued)

    wait_until(swept, 30, "a sweep queued by beat")


@pytest.mark.slow
@pytest.mark.parametrize("schedule_setting", [False, True])
def test_beat_runs_without_slack_settings_and_writes_nothing_where_it_runs(
    schedule_setting, redis_url, tmp_path
):
    """No Slack (nor MLflow) setting; a read-only working directory, as in the image's /app."""
    app_dir, temp = tmp_path / "app", tmp_path / "tmp"
    app_dir.mkdir()
    temp.mkdir()
    queue = f"beat-{uuid.uuid4().hex[:8]}"
    env = service_env(REDIS_URL=f"{redis_url}/14", REGISTRY_BOT_QUEUE=queue, SWEEP_INTERVAL="1")
    env["TMPDIR"] = str(temp)  # the system's temporary directory, for this process
    schedule = tmp_path / "state" / "schedule"
    if schedule_setting:
        schedule.parent.mkdir()
        env["BEAT_SCHEDULE_FILE"] = str(schedule)
    app_dir.chmod(0o555)  # read-only (only for a user other than root: hence the check below)
    beat = start_beat(env, app_dir)
    try:
        wait_sweep(f"{redis_url}/14", queue, beat, tmp_path / "beat.log")
    finally:
        stop(beat)
        app_dir.chmod(0o755)
    assert list(app_dir.iterdir()) == []
    where = schedule.parent if schedule_setting else temp
    assert [p.name for p in where.iterdir()], "no schedule file where the setting says"
    name = schedule.name if schedule_setting else f"{queue}-beat-schedule"
    # Besides the schedule, in the temporary directory: the heartbeat its probes read.
    heartbeat = {"registry-bot-scheduler.live", "registry-bot-scheduler.ready"}
    found = {p.name for p in where.iterdir()} - (set() if schedule_setting else heartbeat)
    assert all(found_name.startswith(name) for found_name in found), found
    assert {p.name for p in temp.iterdir()} >= heartbeat


# -- what is checked, and what each answer means -----------------------------------------

WIDE_POLICY = """\
defaults:
  channel: C0MODELS
  approvers: {groups: [S0LEADS]}
models:
  fraud:
    channel: C0FRAUD
    approvals:
      - {group: S0LEADS, count: 1}
      - {group: S0RISK, count: 1}
  churn:
    gates: [{metric: accuracy, min: 0.9}]
"""


def wide_settings(tmp_path: Path, **kw) -> Settings:
    policy = tmp_path / "wide.yaml"
    policy.write_text(WIDE_POLICY)
    return Settings(
        mlflow_tracking_uri="unused",
        slack_bot_token=TOKEN,
        slack_channel="CNOTICES",
        approver_group="SAPPROVERS",
        policy_file=str(policy),
        policy=load_policy(policy),
        **kw,
    )


def test_every_configured_channel_and_group_is_checked_once_naming_where_it_is_set(tmp_path):
    settings = wide_settings(tmp_path)
    assert channels_named(settings) == {
        "CNOTICES": ["SLACK_CHANNEL"],
        "C0MODELS": ["policy defaults"],  # churn inherits it: not named again
        "C0FRAUD": ["policy for model fraud"],
    }
    assert groups_named(settings) == {
        "SAPPROVERS": ["APPROVER_GROUP"],
        "S0LEADS": ["policy defaults", "policy for model fraud"],
        "S0RISK": ["policy for model fraud"],
    }
    bare = Settings(mlflow_tracking_uri="unused")
    assert channels_named(bare) == groups_named(bare) == {}


def test_only_a_token_slack_refuses_stops_a_service():
    for error in ("invalid_auth", "token_revoked", "account_inactive", "not_authed"):
        finding = token_finding(error)
        assert finding.stops and "SLACK_BOT_TOKEN" in finding.text and error in finding.text
    other = token_finding("fatal_error")
    assert not other.stops and "did not answer" in other.text


def test_what_a_channel_or_group_answer_means():
    assert channel_finding("C1", "SLACK_CHANNEL", {"is_member": True}) is None
    assert channel_finding("C1", "SLACK_CHANNEL", {"is_im": True}) is None  # nothing said
    outside = channel_finding("C1", "SLACK_CHANNEL", {"is_member": False})
    assert outside == Finding(NOT_IN.format(channel="C1", where="SLACK_CHANNEL"))
    archived = channel_finding("C1", "SLACK_CHANNEL", {"is_member": True, "is_archived": True})
    assert archived is not None and "archived" in archived.text and not archived.stops
    assert group_finding("S1", "APPROVER_GROUP", ["UADA"]) is None
    empty = group_finding("S1", "APPROVER_GROUP", [])
    assert empty is not None and "no members" in empty.text
    gone = refusal_finding("user group", "S1", "APPROVER_GROUP", "no_such_subteam")
    assert gone == Finding(NO_GROUP.format(group="S1", where="APPROVER_GROUP"))
    hidden = refusal_finding("channel", "C1", "SLACK_CHANNEL", "channel_not_found")
    assert "not found" in hidden.text and not hidden.stops
    odd = refusal_finding("channel", "C1", "SLACK_CHANNEL", "invalid_arguments")
    assert "could not be checked" in odd.text and "invalid_arguments" in odd.text


# -- asking the Slack double ----------------------------------------------------------------


@pytest.fixture
def slack_now() -> Iterator[SlackDouble]:
    """A fresh Slack double per test: faults and channels of its own."""
    groups = {"SAPPROVERS": ["UADA"], "S0LEADS": ["UADA"], "S0RISK": []}
    with SlackDouble(token=TOKEN, usergroups=groups) as double:
        yield double


def asked(double: SlackDouble, settings: Settings) -> tuple[list[str], bool]:
    client = web_client(settings, timeout=TIMEOUT, retries=False)
    findings, answered = ask_slack(settings, client)
    assert not any(f.stops for f in findings)
    return [f.text for f in findings], answered


def test_a_sound_setup_finds_nothing(slack_now, tmp_path):
    slack_now.usergroups["S0RISK"] = ["UGRACE"]
    settings = wide_settings(tmp_path, slack_api_url=slack_now.api_url)
    assert asked(slack_now, settings) == ([], True)
    assert [c.method for c in slack_now.calls()] == [
        "auth.test",
        *["conversations.info"] * 3,
        *["usergroups.users.list"] * 3,
    ]


def test_each_problem_is_one_line_naming_its_channel_or_group(slack_now, tmp_path):
    slack_now.leave("C0FRAUD")
    slack_now.unknown_channels.add("C0MODELS")
    del slack_now.usergroups["S0LEADS"]
    settings = wide_settings(tmp_path, slack_api_url=slack_now.api_url)
    said, answered = asked(slack_now, settings)
    assert answered
    assert said == [
        NO_CHANNEL.format(channel="C0MODELS", where="policy defaults"),
        NOT_IN.format(channel="C0FRAUD", where="policy for model fraud"),
        NO_GROUP.format(group="S0LEADS", where="policy defaults, policy for model fraud"),
        EMPTY_GROUP.format(group="S0RISK", where="policy for model fraud"),
    ]


def test_a_missing_scope_is_said_once_and_the_groups_are_still_checked(slack_now, tmp_path):
    slack_now.fail_next("conversations.info", status=200, error="missing_scope", count=3)
    settings = wide_settings(tmp_path, slack_api_url=slack_now.api_url)
    said, answered = asked(slack_now, settings)
    assert answered and len(slack_now.calls("conversations.info")) == 1
    assert said[0] == NO_SCOPE.format(what="channels", scope="channels:read or groups:read")
    assert said[1:] == [EMPTY_GROUP.format(group="S0RISK", where="policy for model fraud")]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_slack_busy_or_failing_midway_ends_the_check_with_one_warning(slack_now, tmp_path, status):
    slack_now.leave("C0FRAUD")
    slack_now.fail_next("usergroups.users.list", status=status)  # the first group asked
    settings = wide_settings(tmp_path, slack_api_url=slack_now.api_url)
    said, answered = asked(slack_now, settings)
    assert not answered
    assert said == [
        NOT_IN.format(channel="C0FRAUD", where="policy for model fraud"),
        UNANSWERED.format(why=f"HTTP {status}"),
    ]
    assert len(slack_now.calls("usergroups.users.list")) == 1  # nothing more was asked


def test_check_logs_each_warning_and_raises_for_a_refused_token(slack_now, tmp_path, caplog):
    settings = wide_settings(tmp_path, slack_api_url=slack_now.api_url)
    with caplog.at_level("WARNING", logger="registry.process.preflight"):
        assert check(settings) is True
    assert [r.getMessage() for r in caplog.records] == [
        "start check: " + EMPTY_GROUP.format(group="S0RISK", where="policy for model fraud")
    ]
    refused = replace(settings, slack_bot_token="xoxb-wrong")
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN was refused by Slack .invalid_auth"):
        check(refused)
    nowhere = replace(settings, slack_api_url=f"http://127.0.0.1:{free_port()}/api/")
    assert check(nowhere) is False
