"""Settings: defaults, validation, and one clear line naming a bad setting."""

from __future__ import annotations

import pytest

from registry.settings import Settings, SettingsError
from tests.support import TRAINING_SECRET

BASE = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}


def load(**env):
    return Settings.from_env({**BASE, **env}, dotenv_path=None)


def test_defaults_follow_the_spec():
    s = load()
    assert (s.redis_url, s.slack_api_url, s.slack_command) == (
        "redis://127.0.0.1:6379/0",
        "https://slack.com/api/",
        "/registry",
    )
    assert (s.required_approvals, s.registry_mode, s.staging_alias, s.production_alias) == (
        1,
        "stages",
        "staging",
        "production",
    )
    assert s.nobody_may_approve and s.ui_url == "http://mlflow:5000"
    assert (s.sweep_interval, s.webhooks_url) == (60.0, "http://127.0.0.1:8000")
    assert (s.alertmanager_token, s.alert_model_label) == ("", "model")


def test_the_alertmanager_settings_are_read():
    s = load(ALERTMANAGER_TOKEN="a-long-random-token-1234", ALERT_MODEL_LABEL="served_model")
    assert (s.alertmanager_token, s.alert_model_label) == (
        "a-long-random-token-1234",
        "served_model",
    )


def test_the_catchup_window_is_read():
    s = load()
    assert s.catchup_window == 24 * 3600
    assert load(CATCHUP_WINDOW="90m").catchup_window == 5400


def test_lists_and_rotation():
    s = load(
        APPROVERS="U1AAA, U2BBB,U1AAA",
        TRAINING_WEBHOOK_SECRET=f"{TRAINING_SECRET} {TRAINING_SECRET}",
    )
    assert s.approvers == ("U1AAA", "U2BBB")
    assert len(s.training_webhook_secrets) == 2 and not s.nobody_may_approve


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REGISTRY_MODE": "labels"}, "REGISTRY_MODE"),
        ({"REQUIRED_APPROVALS": "two"}, "REQUIRED_APPROVALS"),
        ({"REQUIRED_APPROVALS": "0"}, "REQUIRED_APPROVALS"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_APP_TOKEN": "xoxb-nope"}, "SLACK_APP_TOKEN"),
        ({"SLACK_CHANNEL": "#general"}, "SLACK_CHANNEL"),
        ({"APPROVERS": "U1AAA,ada"}, "APPROVERS"),
        ({"TRAINING_WEBHOOK_SECRET": "hunter2"}, "TRAINING_WEBHOOK_SECRET"),
        ({"TRAINING_WEBHOOK_SECRET": "whsec_!!!"}, "TRAINING_WEBHOOK_SECRET"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL"),
        ({"POLICY_FILE": "/nonexistent/policy.yaml"}, "POLICY_FILE"),
        ({"SWEEP_INTERVAL": "soon"}, "SWEEP_INTERVAL"),
        ({"CATCHUP_WINDOW": "a day"}, "CATCHUP_WINDOW"),
        ({"CATCHUP_WINDOW": "0"}, "CATCHUP_WINDOW"),
        ({"SLACK_COMMAND": "registry"}, "SLACK_COMMAND"),
        ({"PRODUCTION_ALIAS": "v1 prod"}, "PRODUCTION_ALIAS"),
        ({"REGISTRY_BOT_QUEUE": "two words"}, "REGISTRY_BOT_QUEUE"),
        ({"ALERTMANAGER_TOKEN": "short"}, "ALERTMANAGER_TOKEN"),
        ({"ALERTMANAGER_TOKEN": "sixteen chars and spaces"}, "ALERTMANAGER_TOKEN"),
        ({"ALERT_MODEL_LABEL": "model-name"}, "ALERT_MODEL_LABEL"),
    ],
)
def test_malformed_settings_are_named(env, named):
    with pytest.raises(SettingsError, match=named):
        load(**env)


def test_required_settings_are_named():
    with pytest.raises(SettingsError, match="MLFLOW_TRACKING_URI is required"):
        Settings.from_env({}, dotenv_path=None)
    with pytest.raises(SettingsError, match="SLACK_CHANNEL is required"):
        Settings.from_env(BASE, require=("MLFLOW_TRACKING_URI", "SLACK_CHANNEL"), dotenv_path=None)


def test_dotenv_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("MLFLOW_TRACKING_URI=http://from-file\nSLACK_COMMAND=/models\n")
    s = Settings.from_env({"SLACK_COMMAND": "/reg"}, dotenv_path=env_file)
    assert (s.mlflow_tracking_uri, s.slack_command) == ("http://from-file", "/reg")
