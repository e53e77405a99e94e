"""Settings: defaults, validation, and one clear line naming a bad setting."""

from __future__ import annotations

import tempfile

import pytest

from registry.process.settings import load_settings
from registry.rules.settings import SettingsError
from tests.support import CANARY_SECRET, SERVICE_LINKS, TRAINING_SECRET

BASE = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}


def load(**env):
    return load_settings({**BASE, **env}, dotenv_path=None)


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


def test_the_beat_schedule_file_defaults_to_the_temporary_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what TMPDIR would choose
    assert load(REGISTRY_BOT_QUEUE="rb").beat_schedule == str(tmp_path / "rb-beat-schedule")
    assert load(BEAT_SCHEDULE_FILE="/var/lib/rb/beat").beat_schedule == "/var/lib/rb/beat"


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
        ({"APPROVER_GROUP": "ml-leads"}, "APPROVER_GROUP"),
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
        ({"REDIS_KEY_PREFIX": "team-a"}, "REDIS_KEY_PREFIX"),
        ({"REDIS_KEY_PREFIX": "team:a:"}, "REDIS_KEY_PREFIX"),
        ({"REDIS_KEY_PREFIX": "team a:"}, "REDIS_KEY_PREFIX"),
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
        load_settings({}, dotenv_path=None)
    with pytest.raises(SettingsError, match="SLACK_CHANNEL is required"):
        load_settings(BASE, require=("MLFLOW_TRACKING_URI", "SLACK_CHANNEL"), dotenv_path=None)


def test_dotenv_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("MLFLOW_TRACKING_URI=http://from-file\nSLACK_COMMAND=/models\n")
    s = load_settings({"SLACK_COMMAND": "/reg"}, dotenv_path=env_file)
    assert (s.mlflow_tracking_uri, s.slack_command) == ("http://from-file", "/reg")


def test_the_canary_secret_is_its_own_and_may_rotate():
    s = load(CANARY_WEBHOOK_SECRET=f"{CANARY_SECRET} {TRAINING_SECRET}")
    assert s.canary_webhook_secrets == (CANARY_SECRET, TRAINING_SECRET)
    assert load().canary_webhook_secrets == ()
    with pytest.raises(SettingsError, match="CANARY_WEBHOOK_SECRET"):
        load(CANARY_WEBHOOK_SECRET="hunter2")


def test_no_secret_shows_in_the_settings_repr():
    secrets = {
        "SLACK_BOT_TOKEN": "xoxb-secret-bot-token-0001",
        "SLACK_SIGNING_SECRET": "secret-signing-0002",
        "SLACK_APP_TOKEN": "xapp-secret-app-token-0003",
        "TRAINING_WEBHOOK_SECRET": TRAINING_SECRET,
        "CANARY_WEBHOOK_SECRET": CANARY_SECRET,
        "MLFLOW_WEBHOOK_SECRET": "secret-mlflow-hook-0004",
        "ALERTMANAGER_TOKEN": "secret-alertmanager-0005",
        "EVENT_SINK_SECRET": "whsec_" + "c2luay1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyEh",
    }
    s = load(
        **secrets,
        EVENT_SINK_URLS="https://sink.example/hook",
        REDIS_URL="redis://:secret-redis-password-0006@redis:6379/0",
        MLFLOW_TRACKING_URI="https://ada:secret-mlflow-password-0007@mlflow.example",
    )
    shown = f"{s!r} {s!s} {[s]!r}"
    hidden = [*secrets.values(), "secret-redis-password-0006", "secret-mlflow-password-0007"]
    hidden += [v.removeprefix("whsec_") for v in secrets.values()]
    assert [value for value in hidden if value in shown] == []
    # What an operator needs to read stays: where things are, and that secrets are set.
    assert "redis:6379" in shown and "mlflow.example" in shown and "sink.example" in shown
    assert "slack_bot_token='(set)'" in shown and "slack_app_token='(set)'" in shown


def test_kubernetes_service_links_are_not_taken_for_ports():
    s = load(**SERVICE_LINKS)
    assert (s.bot_port, s.webhooks_port) == (3000, 8000)  # the defaults: nobody set them
    assert load(**{**SERVICE_LINKS, "BOT_PORT": "3100"}).bot_port == 3100


@pytest.mark.parametrize("value", ["http://10.0.0.1:3000", "tcp://10.0.0.1", "3000x"])
def test_a_port_that_is_no_service_link_is_still_refused(value):
    with pytest.raises(SettingsError, match="BOT_PORT must be a whole number"):
        load(BOT_PORT=value)


def test_the_redis_key_prefix_goes_before_every_key_and_the_queue():
    assert load().redis_key_prefix == "" and load().queue_key == "registry-bot"
    prefixed = load(REDIS_KEY_PREFIX=" team-a: ", REGISTRY_BOT_QUEUE="models")
    assert prefixed.redis_key("registry-bot:lock:m") == "team-a:registry-bot:lock:m"
    assert prefixed.queue_key == "team-a:models" and prefixed.queue == "models"
