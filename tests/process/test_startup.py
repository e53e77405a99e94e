"""Services refuse to start on bad settings, in one line; front doors never import mlflow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO, TRAINING_SECRET

CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("SLACK_", "MLFLOW_", "REDIS", "TRAINING_", "APPROVER", "REGISTRY_"))
}
GOOD = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "SLACK_BOT_TOKEN": "xoxb-x",
    "SLACK_SIGNING_SECRET": "s",
    "SLACK_CHANNEL": "CNOTICES",
    "TRAINING_WEBHOOK_SECRET": TRAINING_SECRET,
    "PYTHONPATH": str(REPO),
}


def start(module: str, env: dict, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**CLEAN, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "drop", "extra", "says"),
    [
        ("webhooks", "TRAINING_WEBHOOK_SECRET", {}, "TRAINING_WEBHOOK_SECRET is required"),
        ("webhooks", "MLFLOW_TRACKING_URI", {}, "MLFLOW_TRACKING_URI is required"),
        ("worker", "SLACK_CHANNEL", {}, "SLACK_CHANNEL is required"),
        ("worker", "", {"REQUIRED_APPROVALS": "many"}, "REQUIRED_APPROVALS must be a whole number"),
        ("bot", "SLACK_SIGNING_SECRET", {}, "SLACK_SIGNING_SECRET is required"),
        ("bot", "SLACK_BOT_TOKEN", {}, "SLACK_BOT_TOKEN is required"),
        # The transport is said, never guessed from an app token left in a shared .env.
        (
            "bot",
            "",
            {"SLACK_APP_TOKEN": "xapp-1-test"},
            "SLACK_APP_TOKEN is set but SLACK_TRANSPORT",
        ),
        ("bot", "", {"SLACK_TRANSPORT": "socket"}, "SLACK_APP_TOKEN is required with SLACK_TRANS"),
        (
            "bot",
            "",
            {"SLACK_TRANSPORT": "websocket"},
            "SLACK_TRANSPORT must be one of http, socket",
        ),
    ],
)
def test_bad_settings_stop_a_service_with_one_line(module, drop, extra, says, tmp_path):
    env = {k: v for k, v in GOOD.items() if k != drop} | extra
    result = start(module, env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


def test_front_doors_do_not_import_mlflow(tmp_path):
    code = (
        "import sys, webhooks, bot.web, webhooks.notify\n"
        "from registry.process.settings import load_settings\n"
        "webhooks.create_app(load_settings(dotenv_path=None))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**CLEAN, **GOOD},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["webhooks", "worker", "bot"])
def test_a_malformed_policy_stops_every_service_naming_file_and_line(module, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults:\n  gates:\n    - metric: accuracy\n      minimum: 0.9\n")
    result = start(module, {**GOOD, "POLICY_FILE": str(policy)}, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{policy}:4:" in lines[0] and "unknown key 'minimum'" in lines[0]


@pytest.mark.parametrize(
    ("module", "variable"), [("webhooks", "WEBHOOKS_PORT"), ("bot", "BOT_PORT")]
)
def test_a_busy_port_is_one_line(module, variable, tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = start(
            module, {**GOOD, variable: str(port), "SLACK_API_URL": "http://127.0.0.1:9/"}, tmp_path
        )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]


MALFORMED_GOVERNANCE = [
    ("    protect_production: loudly\n", 3, "protect_production must be one of alert, revert, off"),
    ("    approvals:\n      - {count: 2}\n", 4, "an approvals slot needs a group or users"),
    (
        "    freeze:\n      - {schedule: '0 16 * * FRIDAYS', duration: 64h}\n",
        4,
        "is not a cron expression",
    ),
    (
        "    freeze:\n      - {schedule: '0 16 * * FRI', duration: 64h,\n"
        "         timezone: Europe/Atlantis}\n",
        5,
        "freeze timezone 'Europe/Atlantis' is not an IANA time zone",
    ),
]


@pytest.mark.parametrize("module", ["webhooks", "worker", "bot"])
@pytest.mark.parametrize(("body", "line", "says"), MALFORMED_GOVERNANCE)
def test_a_malformed_governance_key_stops_every_service_naming_the_line(
    module, body, line, says, tmp_path
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"models:\n  fraud:\n{body}")
    result = start(module, {**GOOD, "POLICY_FILE": str(policy)}, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{policy}:{line}:" in lines[0] and says in lines[0], lines[0]
