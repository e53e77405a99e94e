"""Serve a registered model's Production version, swapping atomically when it changes."""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from redis.backoff import NoBackoff
from redis.retry import Retry

from registry.process.settings import merged_env
from registry.rules.record import LIFECYCLE_CHANNEL
from registry.rules.settings import key_prefix

log = logging.getLogger(__name__)

MODES = ("stages", "aliases")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_REFRESH_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 10.0
JOIN_SECONDS = 5.0

Resolver = Callable[[str], str | None]
Loader = Callable[[str], Any]


class NoModelLoaded(RuntimeError):
    """No version of the model has been loaded yet, so there is nothing to predict with."""


@dataclass(frozen=True)
class Loaded:
    """One loaded version: swapped in as a whole, so version and model always agree."""

    version: str
    model: Any
    loaded_at: float


def concerns(data: bytes | str, name: str) -> bool:
    """Say whether a lifecycle event's JSON body is about model `name`."""
    try:
        event = json.loads(data)
    except (ValueError, TypeError):
        return False
    return isinstance(event, dict) and event.get("model_name") == name


def registry_resolver(tracking_uri: str | None, mode: str, alias: str) -> Resolver:
    """Return a resolver: model name -> its Production version (stage or alias), or None."""
    client = MlflowClient(tracking_uri)

    def resolve(name: str) -> str | None:
        try:
            if mode == "aliases":
                # The registered model lists every alias; get_model_version_by_alias would
                # answer a missing alias with INVALID_PARAMETER_VALUE, not "not found".
                version = (client.get_registered_model(name).aliases or {}).get(alias)
                return str(version) if version is not None else None
            with warnings.catch_warnings():
                # Stages are deprecated in MLflow but are the product's stages mode.
                warnings.simplefilter("ignore", FutureWarning)
                found = client.get_latest_versions(name, ["Production"])
            return str(found[0].version) if found else None
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    return resolve


def registry_loader(tracking_uri: str | None) -> Loader:
    """Return a loader: `models:/<name>/<version>` -> pyfunc model, from `tracking_uri`."""
    client = MlflowClient(tracking_uri)

    def load(uri: str) -> Any:
        # Imported here: pyfunc needs numpy and pandas, which only model loading requires.
        import mlflow.artifacts
        import mlflow.pyfunc

        # MLflow resolves a models:/ URI against its process-wide registry URI (ignoring
        # download_artifacts' registry_uri), so resolve the artifacts with our own client.
        name, version = uri.removeprefix("models:/").rsplit("/", 1)
        source = client.get_model_version_download_uri(name, version)
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri)
        return mlflow.pyfunc.load_model(local)

    return load


class ServedModel:
    """The Production version of one registered model, kept current by events and polling."""

    def __init__(
        self,
        name: str,
        *,
        tracking_uri: str | None = None,
        mode: str | None = None,
        production_alias: str | None = None,
        redis_url: str | None = None,
        refresh_seconds: float | None = None,
        channel: str | None = None,
        loader: Loader | None = None,
        resolver: Resolver | None = None,
        env: Mapping[str, str] | None = None,
    ):
        # The environment over a `.env` file in the working directory, as every service reads.
        env = merged_env(None, ".env") if env is None else env
        prefix = key_prefix(env.get("REDIS_KEY_PREFIX", ""))
        self.name, self.channel = name, channel or prefix + LIFECYCLE_CHANNEL
        self.mode = _mode(mode or env.get("REGISTRY_MODE"))
        self.alias = production_alias or env.get("PRODUCTION_ALIAS") or "production"
        self.redis_url = redis_url or env.get("REDIS_URL") or DEFAULT_REDIS_URL
        self.refresh_seconds = _refresh_seconds(refresh_seconds, env.get("REFRESH_SECONDS"))
        tracking_uri = tracking_uri or env.get("MLFLOW_TRACKING_URI") or None
        self._resolve = resolver or registry_resolver(tracking_uri, self.mode, self.alias)
        self._load = loader or registry_loader(tracking_uri)
        self._loaded: Loaded | None = None
        self._swap_lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one load at a time, whoever asks
        self._wake, self._stopping, self._listening = (threading.Event() for _ in range(3))
        self._threads: list[threading.Thread] = []
        self.last_error: str | None = None
        self.last_checked_at: float | None = None
        self.refresh()

    @property
    def version(self) -> str | None:
        """Return the version now served, or None before any was loaded."""
        loaded = self._current()
        return loaded.version if loaded else None

    @property
    def target(self) -> str:
        """Describe what "Production" means in this mode, for messages."""
        return "stage Production" if self.mode == "stages" else f"alias @{self.alias}"

    def predict(self, inputs: Any) -> Any:
        """Return the served model's predictions for `inputs`."""
        return self.predict_with_version(inputs)[1]

    def predict_with_version(self, inputs: Any) -> tuple[str, Any]:
        """Return (version, predictions), both from the same loaded model."""
        # Read the pair once: a swap during this call cannot change what it uses.
        loaded = self._current()
        if loaded is None:
            raise NoModelLoaded(f"no version of {self.name} is loaded: {self.last_error}")
        return loaded.version, loaded.model.predict(inputs)

    def status(self) -> dict[str, Any]:
        """Return what is served and how fresh it is."""
        loaded = self._current()
        return {
            "model": self.name,
            "version": loaded.version if loaded else None,
            "loaded_at": loaded.loaded_at if loaded else None,
            "last_error": self.last_error,
            "last_checked_at": self.last_checked_at,
            "listening": self._listening.is_set(),
        }

    def refresh(self) -> bool:
        """Load the current Production version if it is not the served one; say if it swapped."""
        with self._refresh_lock:
            self.last_checked_at = time.time()
            version = self._resolved_version()
            if version is None:
                return False
            if version == self.version:
                self.last_error = None  # e.g. Production moved back from a version that failed
                return False
            return self._load_and_swap(version)

    def start(self) -> ServedModel:
        """Start following lifecycle events and polling, in daemon threads."""
        if self._threads:
            return self
        self._stopping.clear()
        for role, target in (("events", self._subscribe_forever), ("poll", self._poll_forever)):
            thread = threading.Thread(target=target, name=f"served-{self.name}-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop following events and polling; wait for both threads."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(JOIN_SECONDS)
        self._threads = []

    def __enter__(self) -> ServedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _current(self) -> Loaded | None:
        with self._swap_lock:
            return self._loaded

    def _resolved_version(self) -> str | None:
        try:
            version = self._resolve(self.name)
        except Exception as exc:  # the registry is unreachable or refused: keep serving
            self._fail(None, f"cannot find the {self.target} version of {self.name}: {exc}")
            return None
        if version is None:
            message = f"no Production version of {self.name} ({self.target})"
            self._fail(None, message, level=logging.WARNING)
        return version

    def _load_and_swap(self, version: str) -> bool:
        try:
            model = self._load(f"models:/{self.name}/{version}")
        except Exception as exc:  # any flavour can fail its own way; the old model stays
            self._fail(
                version, f"cannot load {self.name} version {version}: {type(exc).__name__}: {exc}"
            )
            return False
        previous = self.version
        with self._swap_lock:
            self._loaded = Loaded(version=version, model=model, loaded_at=time.time())
        self.last_error = None
        log.info(
            "serving %s version %s (was %s)",
            self.name,
            version,
            previous,
            extra={"model": self.name, "version": version},
        )
        return True

    def _fail(self, version: str | None, message: str, level: int = logging.ERROR) -> None:
        served = self.version
        self.last_error = message
        log.log(
            level,
            "%s; still serving version %s",
            message,
            served,
            extra={"model": self.name, "version": version or served},
        )

    def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.refresh_seconds)
            self._wake.clear()  # an event arriving during the refresh wakes us again
            if self._stopping.is_set():
                return
            try:
                self.refresh()
            except Exception:  # never let one bad refresh end the polling
                log.exception("refresh of %s failed", self.name, extra={"model": self.name})

    def _subscribe_forever(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:  # Redis went away (or never came): back off, retry
                failures = 1 if self._listening.is_set() else failures + 1  # a new outage?
                self._listening.clear()
                delay = min(0.5 * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "lifecycle events for %s unavailable (%s); retrying in %.1fs",
                    self.name,
                    exc,
                    delay,
                    extra={"model": self.name},
                )
                self._stopping.wait(delay)

    def _listen(self) -> None:
        # No client-side retries: this loop's own backoff keeps stop() prompt.
        client = redis.Redis.from_url(
            self.redis_url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        with client, client.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(self.channel)
            log.info(
                "following %s on %s for %s",
                self.channel,
                _safe(self.redis_url),
                self.name,
                extra={"model": self.name},
            )
            self._listening.set()
            self._wake.set()  # events may have been missed while we were not subscribed
            while not self._stopping.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message and concerns(message["data"], self.name):
                    self._wake.set()
        self._listening.clear()


def _safe(url: str) -> str:
    """Return a Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _mode(value: str | None) -> str:
    """Return the registry mode: the argument, else REGISTRY_MODE, else stages."""
    mode = (value or "stages").strip().lower()
    if mode not in MODES:
        raise ValueError(f"REGISTRY_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def _refresh_seconds(value: float | None, env_value: str | None) -> float:
    """Return the polling period: the argument, else REFRESH_SECONDS, else the default."""
    if value is None:
        try:
            value = float(env_value) if env_value else DEFAULT_REFRESH_SECONDS
        except ValueError:
            raise ValueError(f"REFRESH_SECONDS must be a number, not {env_value!r}") from None
    if value <= 0:
        raise ValueError(f"REFRESH_SECONDS must be positive, not {value}")
    return float(value)
