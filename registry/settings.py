"""One settings object for every service, read from the environment and validated at start."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from registry.events import USER_ID
from registry.policy import Policy, PolicyError, load_policy, parse_duration

MODES = ("stages", "aliases")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a Prometheus label name


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Every setting of SPEC section 3; build with `from_env` or directly in tests."""

    mlflow_tracking_uri: str
    mlflow_ui_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_app_token: str = ""
    slack_channel: str = ""
    slack_api_url: str = "https://slack.com/api/"
    slack_command: str = "/registry"
    approvers: tuple[str, ...] = ()
    approver_group: str = ""
    required_approvals: int = 1
    training_webhook_secrets: tuple[str, ...] = ()
    mlflow_webhook_secret: str = ""
    alertmanager_token: str = ""
    alert_model_label: str = "model"
    registry_mode: str = "stages"
    staging_alias: str = "staging"
    production_alias: str = "production"
    policy_file: str = ""
    event_sink_urls: tuple[str, ...] = ()
    event_sink_secret: str = ""
    sweep_interval: float = 60.0
    catchup_window: float = 24 * 3600.0
    webhooks_url: str = "http://127.0.0.1:8000"
    webhooks_host: str = "127.0.0.1"
    webhooks_port: int = 8000
    bot_host: str = "127.0.0.1"
    bot_port: int = 3000
    queue: str = "registry-bot"
    policy: Policy = field(default_factory=Policy.empty, compare=False, repr=False)

    @property
    def ui_url(self) -> str:
        """Return the base URL for MLflow UI links, or '' when there is none."""
        base = self.mlflow_ui_url or self.mlflow_tracking_uri
        return base.rstrip("/") if base.startswith(("http://", "https://")) else ""

    @property
    def nobody_may_approve(self) -> bool:
        """Say whether no approver is configured (never defaults to 'anyone')."""
        return not self.approvers and not self.approver_group

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        require: Iterable[str] = ("MLFLOW_TRACKING_URI",),
        dotenv_path: str | Path | None = ".env",
    ) -> Settings:
        """Read settings from `environ` (default os.environ) over a `.env` file.

        `require` names the settings this service cannot run without.
        """
        env = _merged_env(environ, dotenv_path)
        settings = _parse(env)
        for name in require:
            if not env.get(name, "").strip():
                raise SettingsError(f"{name} is required but not set")
        if settings.event_sink_urls and not settings.event_sink_secret:
            raise SettingsError("EVENT_SINK_SECRET is required when EVENT_SINK_URLS is set")
        return settings


def _merged_env(environ: Mapping[str, str] | None, dotenv_path: str | Path | None) -> dict:
    values: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        values.update({k: v or "" for k, v in dotenv_values(dotenv_path).items()})
    values.update(os.environ if environ is None else environ)
    return values


def _parse(env: Mapping[str, str]) -> Settings:
    get = lambda name, default="": env.get(name, default).strip() or default  # noqa: E731
    mode = get("REGISTRY_MODE", "stages").lower()
    if mode not in MODES:
        raise SettingsError(f"REGISTRY_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    return Settings(
        mlflow_tracking_uri=get("MLFLOW_TRACKING_URI"),
        mlflow_ui_url=_url(get("MLFLOW_UI_URL"), "MLFLOW_UI_URL"),
        redis_url=_redis_url(get("REDIS_URL", "redis://127.0.0.1:6379/0")),
        slack_bot_token=_prefixed(get("SLACK_BOT_TOKEN"), "xoxb-", "SLACK_BOT_TOKEN"),
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
        slack_app_token=_prefixed(get("SLACK_APP_TOKEN"), "xapp-", "SLACK_APP_TOKEN"),
        slack_channel=_matching(get("SLACK_CHANNEL"), _CHANNEL_ID, "SLACK_CHANNEL", "a channel ID"),
        slack_api_url=_url(get("SLACK_API_URL", "https://slack.com/api/"), "SLACK_API_URL"),
        slack_command=_command(get("SLACK_COMMAND", "/registry")),
        approvers=_user_ids(get("APPROVERS")),
        approver_group=get("APPROVER_GROUP"),
        required_approvals=_int(get("REQUIRED_APPROVALS", "1"), "REQUIRED_APPROVALS", 1, 20),
        training_webhook_secrets=_whsecs(get("TRAINING_WEBHOOK_SECRET"), "TRAINING_WEBHOOK_SECRET"),
        mlflow_webhook_secret=get("MLFLOW_WEBHOOK_SECRET"),
        alertmanager_token=_token(get("ALERTMANAGER_TOKEN"), "ALERTMANAGER_TOKEN"),
        alert_model_label=_matching(
            get("ALERT_MODEL_LABEL", "model"), _LABEL_NAME, "ALERT_MODEL_LABEL", "a label name"
        ),
        registry_mode=mode,
        staging_alias=_matching(
            get("STAGING_ALIAS", "staging"), _ALIAS, "STAGING_ALIAS", "an alias"
        ),
        production_alias=_matching(
            get("PRODUCTION_ALIAS", "production"), _ALIAS, "PRODUCTION_ALIAS", "an alias"
        ),
        policy_file=get("POLICY_FILE"),
        policy=_policy(get("POLICY_FILE")),
        event_sink_urls=tuple(_url(u, "EVENT_SINK_URLS") for u in _split(get("EVENT_SINK_URLS"))),
        event_sink_secret=_whsec_or_empty(get("EVENT_SINK_SECRET"), "EVENT_SINK_SECRET"),
        sweep_interval=float(_int(get("SWEEP_INTERVAL", "60"), "SWEEP_INTERVAL", 1, 86400)),
        catchup_window=_window(get("CATCHUP_WINDOW", "24h")),
        webhooks_url=_url(get("WEBHOOKS_URL", "http://127.0.0.1:8000"), "WEBHOOKS_URL"),
        webhooks_host=get("WEBHOOKS_HOST", "127.0.0.1"),
        webhooks_port=_int(get("WEBHOOKS_PORT", "8000"), "WEBHOOKS_PORT", 0, 65535),
        bot_host=get("BOT_HOST", "127.0.0.1"),
        bot_port=_int(get("BOT_PORT", "3000"), "BOT_PORT", 0, 65535),
        queue=_matching(
            get("REGISTRY_BOT_QUEUE", "registry-bot"), _ALIAS, "REGISTRY_BOT_QUEUE", "a queue name"
        ),
    )


def _split(value: str, sep: str = ",") -> list[str]:
    return [part.strip() for part in value.split(sep) if part.strip()]


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, not {number}")
    return number


def _url(value: str, name: str) -> str:
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise SettingsError(f"{name} must be an http(s) URL, not {value!r}")
    return value


def _redis_url(value: str) -> str:
    if not re.match(r"^(redis|rediss|unix)://", value):
        raise SettingsError(
            f"REDIS_URL must start with redis://, rediss:// or unix://, not {value!r}"
        )
    return value


def _prefixed(value: str, prefix: str, name: str) -> str:
    if value and not value.startswith(prefix):
        raise SettingsError(f"{name} must start with {prefix!r}")
    return value


def _matching(value: str, pattern: re.Pattern, name: str, what: str) -> str:
    if value and not pattern.match(value):
        raise SettingsError(f"{name} must be {what}, not {value!r}")
    return value


def _token(value: str, name: str) -> str:
    # It travels in an HTTP header: no spaces or control characters, and not guessable.
    if value and (len(value) < 16 or not value.isprintable() or " " in value):
        raise SettingsError(f"{name} must be at least 16 printable characters without spaces")
    return value


def _command(value: str) -> str:
    if not re.match(r"^/[a-z0-9_-]{1,31}$", value):
        raise SettingsError(f"SLACK_COMMAND must look like /registry, not {value!r}")
    return value


def _user_ids(value: str) -> tuple[str, ...]:
    ids = _split(value)
    bad = [uid for uid in ids if not USER_ID.match(uid)]
    if bad:
        raise SettingsError(f"APPROVERS must be Slack user IDs (U…); not: {', '.join(bad)}")
    return tuple(dict.fromkeys(ids))


def _whsecs(value: str, name: str) -> tuple[str, ...]:
    secrets = value.split()
    for secret in secrets:
        _whsec_or_empty(secret, name)
    return tuple(secrets)


def _whsec_or_empty(value: str, name: str) -> str:
    if not value:
        return value
    if not value.startswith("whsec_"):
        raise SettingsError(f"{name} must be a Standard Webhooks secret starting with 'whsec_'")
    try:
        key = base64.b64decode(value[len("whsec_") :], validate=True)
    except binascii.Error:
        raise SettingsError(f"{name} is not valid base64 after 'whsec_'") from None
    if not 24 <= len(key) <= 64:
        raise SettingsError(f"{name} must decode to 24 to 64 bytes, not {len(key)}")
    return value


def _window(value: str) -> float:
    try:
        return parse_duration(value)  # the policy file's syntax: 30m, 24h, 7d
    except ValueError as exc:
        raise SettingsError(f"CATCHUP_WINDOW: {exc}") from None


def _policy(path: str) -> Policy:
    if not path:
        return Policy.empty()
    if not Path(path).is_file():
        raise SettingsError(f"POLICY_FILE {path!r} does not exist")
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise SettingsError(f"POLICY_FILE {exc}") from None
