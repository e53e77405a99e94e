"""The `registry-bot` command (SPEC 16): check-policy, doctor and version, as operators run them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import registry
from devkit.slack_double import SlackDouble
from registry.process.settings import load_settings
from registry.rules.settings import SettingsError

TOKEN = "xoxb-doctor"
BROKEN = "defaults:\n  gates:\n    - metric: accuracy\n      min: high\n"
POLICY = "models:\n  fraud:\n    channel: C0FRAUD\n    approvers: {groups: [S0RISK]}\n"


def registry_bot(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the command as the console script does; return the finished process."""
    code = "from registry.process.cli import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


# -- check-policy ------------------------------------------------------------------------------


def test_check_policy_prints_the_line_the_services_would_and_exits_1(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(BROKEN)
    done = registry_bot("check-policy", str(policy))
    assert done.returncode == 1
    with pytest.raises(SettingsError) as refused:  # what every service says at start
        load_settings({"POLICY_FILE": str(policy)}, require=(), dotenv_path=None)
    assert str(refused.value) == f"POLICY_FILE {done.stdout.strip()}"
    assert done.stdout.startswith(f"{policy}:4: ")


def test_check_policy_passes_a_good_file_and_names_its_models(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    done = registry_bot("check-policy", str(policy))
    assert (done.returncode, done.stdout.strip()) == (
        0,
        f"{policy}: ok (defaults and 1 model policies: fraud)",
    )


def test_check_policy_on_a_missing_file_says_so(tmp_path):
    done = registry_bot("check-policy", str(tmp_path / "nope.yaml"))
    assert done.returncode == 1 and "cannot be read (No such file or directory)" in done.stdout


def test_version_and_help():
    assert registry_bot("version").stdout.strip() == f"registry-bot {registry.__version__}"
    helped = registry_bot("--help")
    assert helped.returncode == 0
    assert all(word in helped.stdout for word in ("check-policy", "doctor", "version"))
    assert registry_bot().returncode == 2  # no command: the usage, and a usage error


# -- doctor --------------------------------------------------------------------------------------


@pytest.fixture
def own_slack() -> Iterator[SlackDouble]:
    """A Slack double of this test's own, which the test may take scopes and channels from."""
    with SlackDouble(token=TOKEN, usergroups={"S0RISK": ["UADA"]}) as double:
        yield double


def doctor_env(redis_url, mlflow_server, slack, tmp_path: Path, **extra: str) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "REDIS_URL": f"{redis_url}/13",
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": "s" * 32,
        "SLACK_CHANNEL": "CNOTICES",
        "SLACK_API_URL": slack.api_url,
        "TRAINING_WEBHOOK_SECRET": "whsec_" + "A" * 32,
        "POLICY_FILE": str(policy),
        "REGISTRY_BOT_QUEUE": f"doctor-{uuid.uuid4().hex[:8]}",
    }
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {**keep, **settings, **extra}


def lines_of(done) -> dict[str, str]:
    """Map each check's name to its line."""
    found = {}
    for line in done.stdout.splitlines():
        status, rest = line.split(None, 1)
        found[rest.split(":", 1)[0]] = f"{status} {rest}"
    return found


def test_doctor_against_a_working_stack_passes_every_check(
    redis_url, mlflow_server, own_slack, tmp_path
):
    env = doctor_env(redis_url, mlflow_server, own_slack, tmp_path)
    done = registry_bot("doctor", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = lines_of(done)
    assert set(checks) == {
        "settings",
        "redis",
        "mlflow",
        "slack token",
        "slack scopes",
        "channel CNOTICES",
        "channel C0FRAUD",
        "user group S0RISK",
    }
    assert all(line.startswith("ok ") for line in checks.values()), done.stdout


def test_doctor_names_a_wrong_channel_and_a_missing_scope_and_exits_1(
    redis_url, mlflow_server, own_slack, tmp_path
):
    own_slack.unknown_channels.add("C0FRAUD")
    own_slack.scopes.discard("users:read.email")
    env = doctor_env(redis_url, mlflow_server, own_slack, tmp_path)
    done = registry_bot("doctor", env=env, cwd=tmp_path)
    assert done.returncode == 1
    checks = lines_of(done)
    assert checks["slack scopes"].startswith("FAIL slack scopes: the token lacks users:read.email")
    assert "reinstall" in checks["slack scopes"]
    assert checks["channel C0FRAUD"].startswith("FAIL channel C0FRAUD: channel C0FRAUD")
    assert "was not found" in checks["channel C0FRAUD"]
    assert checks["channel CNOTICES"].startswith("ok ") and checks["redis"].startswith("ok ")


def test_doctor_says_what_to_do_when_redis_and_mlflow_do_not_answer(redis_url, own_slack, tmp_path):
    from devkit.stack import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    env = doctor_env(
        redis_url, dead, own_slack, tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    env.pop("SLACK_SIGNING_SECRET")
    done = registry_bot("doctor", env=env, cwd=tmp_path)
    assert done.returncode == 1
    checks = lines_of(done)
    assert checks["settings"] == "FAIL settings: not set: SLACK_SIGNING_SECRET -> set them"
    assert checks["redis"].endswith("-> start it or fix REDIS_URL")
    assert checks["mlflow"].startswith(f"FAIL mlflow: {dead} did not answer")
    assert checks["mlflow"].endswith("-> start it or fix MLFLOW_TRACKING_URI")
    assert checks["slack token"].startswith("ok ")


def test_doctor_with_a_refused_token_stops_asking_slack(
    redis_url, mlflow_server, own_slack, tmp_path
):
    env = doctor_env(redis_url, mlflow_server, own_slack, tmp_path, SLACK_BOT_TOKEN="xoxb-wrong")
    done = registry_bot("doctor", env=env, cwd=tmp_path)
    assert done.returncode == 1
    checks = lines_of(done)
    assert checks["slack token"].startswith(
        "FAIL slack token: Slack refused the token (invalid_auth)"
    )
    assert not [name for name in checks if name.startswith("channel")]
