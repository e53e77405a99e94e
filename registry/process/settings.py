"""Read the settings a process starts with: its environment, over a `.env` file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv import dotenv_values

from registry.rules.settings import Settings, SettingsError, parse_settings


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    require: Iterable[str] = ("MLFLOW_TRACKING_URI",),
    dotenv_path: str | Path | None = ".env",
) -> Settings:
    """Read settings from `environ` (default os.environ) over a `.env` file.

    `require` names the settings this service cannot run without.
    """
    env = merged_env(environ, dotenv_path)
    settings = parse_settings(env)
    for name in require:
        if not env.get(name, "").strip():
            raise SettingsError(f"{name} is required but not set")
    if settings.event_sink_urls and not settings.event_sink_secret:
        raise SettingsError("EVENT_SINK_SECRET is required when EVENT_SINK_URLS is set")
    return settings


def merged_env(environ: Mapping[str, str] | None, dotenv_path: str | Path | None) -> dict:
    values: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        values.update({k: v or "" for k, v in dotenv_values(dotenv_path).items()})
    values.update(os.environ if environ is None else environ)
    return values
