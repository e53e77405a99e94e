"""One settings object for every service, read from the environment and validated at start."""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from registry.rules.events import USER_ID
from registry.rules.policy import Policy, PolicyError, load_policy, parse_duration

MODES = ("stages", "aliases")
TRANSPORTS = ("http", "socket")  # how the bot hears from Slack: chosen, never inferred
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,254}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,}")  # a Slack user group ID  # a Prometheus label name
# Kubernetes gives every pod a `<SERVICE>_PORT=tcp://<ip>:<port>` for each Service in its
# namespace (unless the pod sets enableServiceLinks: false): Services named `bot` and
# `webhooks` set BOT_PORT and WEBHOOKS_PORT so. Nobody chose such a value for registry-bot.
_SERVICE_LINK = re.compile(r"(tcp|udp|sctp)://\S+:\d+")
# REDIS_KEY_PREFIX: a name and one colon, which ends it; two different prefixes thus never
# make the same key, whatever follows them.
KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}:")


# Settings an operator must never find in a log line or a traceback: shown as set or unset.
SECRETS = frozenset(
    {
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "training_webhook_secrets",
        "canary_webhook_secrets",
        "mlflow_webhook_secret",
        "alertmanager_token",
        "event_sink_secret",
        "mlflow_gate_token",
    }
)
# URLs that may carry a password (redis://:pw@host, https://user:pw@mlflow): shown without it.
URLS = frozenset({"mlflow_tracking_uri", "mlflow_ui_url", "redis_url"})


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
    slack_transport: str = ""  # "http", "socket", or "" when SLACK_TRANSPORT is unset
    slack_channel: str = ""
    slack_api_url: str = "https://slack.com/api/"
    slack_command: str = "/registry"
    approvers: tuple[str, ...] = ()
    approver_group: str = ""
    required_approvals: int = 1
    training_webhook_secrets: tuple[str, ...] = ()
    canary_webhook_secrets: tuple[str, ...] = ()
    mlflow_webhook_secret: str = ""
    alertmanager_token: str = ""
    alert_model_label: str = "model"
    registry_mode: str = "stages"
    staging_alias: str = "staging"
    production_alias: str = "production"
    policy_file: str = ""
    event_sink_urls: tuple[str, ...] = ()
    event_sink_secret: str = ""
    mlflow_gate_token: str = ""  # the proof of registry-bot's own MLflow requests (SPEC 14)
    sweep_interval: float = 60.0
    catchup_window: float = 24 * 3600.0
    retry_for: float = 6 * 3600.0
    webhooks_url: str = "http://127.0.0.1:8000"
    webhooks_host: str = "127.0.0.1"
    webhooks_port: int = 8000
    bot_host: str = "127.0.0.1"
    bot_port: int = 3000
    queue: str = "registry-bot"
    beat_schedule_file: str = ""  # "" is a file named for the queue in the temporary directory
    redis_key_prefix: str = ""  # before every Redis key and channel; "" keeps 0.1's keys
    policy: Policy = field(default_factory=Policy.empty, compare=False, repr=False)

    def __repr__(self) -> str:
        """Show every setting but the secrets: a secret is only said to be set or not."""
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in SECRETS:
                value = "(set)" if value else "(unset)"
            elif f.name in URLS:
                value = without_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @property
    def ui_url(self) -> str:
        """Return the base URL for MLflow UI links, or '' when there is none."""
        base = self.mlflow_ui_url or self.mlflow_tracking_uri
        return base.rstrip("/") if base.startswith(("http://", "https://")) else ""

    def redis_key(self, name: str) -> str:
        """Return the Redis key (or pub/sub channel) `name` under this deployment's prefix."""
        return self.redis_key_prefix + name

    @property
    def queue_key(self) -> str:
        """Return the Redis list behind the Celery queue (kombu puts the prefix before it)."""
        return self.redis_key(self.queue)

    @property
    def beat_schedule(self) -> str:
        """Return where the scheduler keeps its schedule: BEAT_SCHEDULE_FILE, else a file
        named for the queue in the system's temporary directory (the one place a read-only
        container may write)."""
        default = os.path.join(tempfile.gettempdir(), f"{self.queue}-beat-schedule")
        return self.beat_schedule_file or default

    @property
    def nobody_may_approve(self) -> bool:
        """Say whether no approver is configured (never defaults to 'anyone')."""
        return not self.approvers and not self.approver_group


Get = Callable[..., str]  # a setting's value by name, or its default


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from environment-like values (unset, empty and blank mean the default)."""
    get = lambda name, default="": env.get(name, default).strip() or default  # noqa: E731
    return Settings(**_slack(get), **_secrets(get), **_registry(get), **_places(get))


def _slack(get: Get) -> dict[str, Any]:
    """Read the Slack settings and who may approve."""
    return {
        "slack_bot_token": _prefixed(get("SLACK_BOT_TOKEN"), "xoxb-", "SLACK_BOT_TOKEN"),
        "slack_signing_secret": get("SLACK_SIGNING_SECRET"),
        "slack_app_token": _prefixed(get("SLACK_APP_TOKEN"), "xapp-", "SLACK_APP_TOKEN"),
        "slack_transport": _choice(
            get("SLACK_TRANSPORT").lower(), ("", *TRANSPORTS), "SLACK_TRANSPORT"
        ),
        "slack_channel": _matching(
            get("SLACK_CHANNEL"), _CHANNEL_ID, "SLACK_CHANNEL", "a channel ID"
        ),
        "slack_api_url": _url(get("SLACK_API_URL", "https://slack.com/api/"), "SLACK_API_URL"),
        "slack_command": _command(get("SLACK_COMMAND", "/registry")),
        "approvers": _user_ids(get("APPROVERS")),
        "approver_group": _matching(
            get("APPROVER_GROUP"), _GROUP_ID, "APPROVER_GROUP", "a Slack user group ID (S…)"
        ),
        "required_approvals": _int(get("REQUIRED_APPROVALS", "1"), "REQUIRED_APPROVALS", 1, 20),
    }


def _secrets(get: Get) -> dict[str, Any]:
    """Read what the inbound routes verify with, and what signs the outbound events."""
    training = get("TRAINING_WEBHOOK_SECRET")
    return {
        "training_webhook_secrets": _whsecs(training, "TRAINING_WEBHOOK_SECRET"),
        "canary_webhook_secrets": _whsecs(get("CANARY_WEBHOOK_SECRET"), "CANARY_WEBHOOK_SECRET"),
        "mlflow_webhook_secret": get("MLFLOW_WEBHOOK_SECRET"),
        "alertmanager_token": _token(get("ALERTMANAGER_TOKEN"), "ALERTMANAGER_TOKEN"),
        "alert_model_label": _matching(
            get("ALERT_MODEL_LABEL", "model"), _LABEL_NAME, "ALERT_MODEL_LABEL", "a label name"
        ),
        "event_sink_urls": tuple(
            _url(u, "EVENT_SINK_URLS") for u in _split(get("EVENT_SINK_URLS"))
        ),
        "event_sink_secret": _whsec_or_empty(get("EVENT_SINK_SECRET"), "EVENT_SINK_SECRET"),
        "mlflow_gate_token": _token(get("MLFLOW_GATE_TOKEN"), "MLFLOW_GATE_TOKEN"),
    }


def _registry(get: Get) -> dict[str, Any]:
    """Read how the registry is used: where, in which mode, under which policy and timings."""
    return {
        "mlflow_tracking_uri": get("MLFLOW_TRACKING_URI"),
        "mlflow_ui_url": _url(get("MLFLOW_UI_URL"), "MLFLOW_UI_URL"),
        "registry_mode": _choice(get("REGISTRY_MODE", "stages").lower(), MODES, "REGISTRY_MODE"),
        "staging_alias": _matching(
            get("STAGING_ALIAS", "staging"), _ALIAS, "STAGING_ALIAS", "an alias"
        ),
        "production_alias": _matching(
            get("PRODUCTION_ALIAS", "production"), _ALIAS, "PRODUCTION_ALIAS", "an alias"
        ),
        "policy_file": get("POLICY_FILE"),
        "policy": _policy(get("POLICY_FILE")),
        "sweep_interval": float(_int(get("SWEEP_INTERVAL", "60"), "SWEEP_INTERVAL", 1, 86400)),
        "catchup_window": _window(get("CATCHUP_WINDOW", "24h"), "CATCHUP_WINDOW"),
        "retry_for": _window(get("RETRY_FOR", "6h"), "RETRY_FOR"),
    }


def _places(get: Get) -> dict[str, Any]:
    """Read where the services listen and meet: Redis, the queue, the ports."""
    return {
        "redis_url": _redis_url(get("REDIS_URL", "redis://127.0.0.1:6379/0")),
        "webhooks_url": _url(get("WEBHOOKS_URL", "http://127.0.0.1:8000"), "WEBHOOKS_URL"),
        "webhooks_host": get("WEBHOOKS_HOST", "127.0.0.1"),
        "webhooks_port": _port(get("WEBHOOKS_PORT", "8000"), "WEBHOOKS_PORT", "8000"),
        "bot_host": get("BOT_HOST", "127.0.0.1"),
        "bot_port": _port(get("BOT_PORT", "3000"), "BOT_PORT", "3000"),
        "queue": _matching(
            get("REGISTRY_BOT_QUEUE", "registry-bot"), _ALIAS, "REGISTRY_BOT_QUEUE", "a queue name"
        ),
        "beat_schedule_file": get("BEAT_SCHEDULE_FILE"),
        "redis_key_prefix": key_prefix(get("REDIS_KEY_PREFIX")),
    }


def key_prefix(value: str) -> str:
    """Read REDIS_KEY_PREFIX: empty, or a name ending in its only colon (`team-a:`)."""
    value = value.strip()
    if value and not KEY_PREFIX.fullmatch(value):
        raise SettingsError(
            "REDIS_KEY_PREFIX must be up to 64 letters, digits, '_', '-' or '.' followed by "
            f"one ':' (like 'team-a:'), not {value!r}"
        )
    return value


def without_password(url: str) -> str:
    """Return `url` with any password in it replaced, for showing."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not (at and colon):
        return url
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _split(value: str, sep: str = ",") -> list[str]:
    return [part.strip() for part in value.split(sep) if part.strip()]


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        named = ", ".join(a for a in allowed if a)
        raise SettingsError(f"{name} must be one of {named}, not {value!r}")
    return value


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, not {number}")
    return number


def _port(value: str, name: str, default: str) -> int:
    """Read a port; a Kubernetes service link in its place is no setting: the default applies."""
    return _int(default if _SERVICE_LINK.fullmatch(value) else value, name, 0, 65535)


def _url(value: str, name: str) -> str:
    if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
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
    if value and not pattern.fullmatch(value):
        raise SettingsError(f"{name} must be {what}, not {value!r}")
    return value


def _token(value: str, name: str) -> str:
    # It travels in an HTTP header: no spaces or control characters, and not guessable.
    if value and (len(value) < 16 or not value.isprintable() or " " in value):
        raise SettingsError(f"{name} must be at least 16 printable characters without spaces")
    return value


def _command(value: str) -> str:
    if not re.fullmatch(r"/[a-z0-9_-]{1,31}", value):
        raise SettingsError(f"SLACK_COMMAND must look like /registry, not {value!r}")
    return value


def _user_ids(value: str) -> tuple[str, ...]:
    ids = _split(value)
    bad = [uid for uid in ids if not USER_ID.fullmatch(uid)]
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


def _window(value: str, name: str) -> float:
    try:
        return parse_duration(value)  # the policy file's syntax: 30m, 24h, 7d
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _policy(path: str) -> Policy:
    if not path:
        return Policy.empty()
    if not Path(path).is_file():
        raise SettingsError(f"POLICY_FILE {path!r} does not exist")
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise SettingsError(f"POLICY_FILE {exc}") from None
