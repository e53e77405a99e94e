"""The gate's settings: registry-bot's own (SPEC 3), read as every service reads them.

MLFLOW_GATE_TOKEN is required: without it the gate could not tell registry-bot's requests
from anyone's, and the server does not start; nor does it with any other setting malformed
(REDIS_URL, say). Once read, the token is taken out of the server process's environment, so
the subprocesses MLflow's server starts do not inherit it. The rest (POLICY_FILE, REDIS_URL,
PRODUCTION_ALIAS, REGISTRY_BOT_QUEUE, SLACK_CHANNEL) is read at start and read again
whenever the policy file changes, so a policy edit reaches the gate without a restart. While
they cannot be read (a malformed or missing policy file), every write the gate watches is
refused: the gate never fails open.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from registry.adapters.queue import Producer
from registry.process.settings import load_settings, merged_env
from registry.rules.settings import Settings, SettingsError, parse_settings

TOKEN_NAME = "MLFLOW_GATE_TOKEN"
NO_TOKEN = (
    "MLFLOW_GATE_TOKEN is required by `mlflow server --app-name registry-bot`: set the same "
    "secret on the MLflow server and on every registry-bot process"
)


class GateSettings:
    """Settings the hook asks for on each watched write, re-read when the policy changes."""

    def __init__(self, environ: Mapping[str, str] | None = None, dotenv_path: str = ".env"):
        self.env = merged_env(environ, dotenv_path)
        self.token = check_start(self.env)
        if environ is None:  # read from this process's environment: keep it from children
            os.environ.pop(TOKEN_NAME, None)
        self.last: Settings | None = None  # the last settings read, for the refusal's channel
        self._seen: tuple | None = None
        self._error: Exception | None = None
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._reload()

    def current(self) -> Settings:
        """Return the settings now; raise SettingsError while they cannot be read."""
        if self._signature() != self._seen:
            with self._lock:
                if self._signature() != self._seen:
                    self._reload()
        if self._error is not None or self.last is None:
            raise SettingsError(f"registry-bot's settings cannot be read: {self._error}")
        return self.last

    def producer(self) -> Producer:
        """Return the queue producer for the current settings (made once)."""
        settings = self.current()
        if self._producer is None:
            self._producer = Producer(settings)
        return self._producer

    def _reload(self) -> None:
        self._seen = self._signature()
        try:
            loaded = load_settings(self.env, require=(), dotenv_path=None)
        except (SettingsError, OSError) as exc:
            self._error = exc
            return
        if self.last is None or (loaded.redis_url, loaded.queue_key) != (
            self.last.redis_url,
            self.last.queue_key,  # the queue's list, under REDIS_KEY_PREFIX
        ):
            self._producer = None
        self.last, self._error = loaded, None

    def _signature(self) -> tuple:
        """What says the policy file changed: its path, modification time and size."""
        path = self.env.get("POLICY_FILE", "").strip()
        if not path:
            return ("",)
        try:
            stat = os.stat(path)
        except OSError as exc:
            return (path, "missing", exc.errno)
        return (path, stat.st_mtime_ns, stat.st_size)


def check_start(env: Mapping[str, str]) -> str:
    """Return MLFLOW_GATE_TOKEN; raise SettingsError (the server does not start) if it or any
    setting other than the policy file is missing or malformed. A policy file problem does
    not stop the server: the gate refuses every watched write until it is fixed."""
    token = gate_token(env)
    load_settings(
        {k: v for k, v in env.items() if k != "POLICY_FILE"}, require=(), dotenv_path=None
    )
    return token


def gate_token(env: Mapping[str, str]) -> str:
    """Return MLFLOW_GATE_TOKEN, checked as the settings check it; raise if it is unset."""
    token = parse_settings({TOKEN_NAME: env.get(TOKEN_NAME, "")})
    if not token.mlflow_gate_token:
        raise SettingsError(NO_TOKEN)
    return token.mlflow_gate_token
