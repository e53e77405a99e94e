"""Test helpers: running service stacks, signed requests and small real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from standardwebhooks.webhooks import Webhook

from registry import devstack

REPO = Path(__file__).resolve().parent.parent
TRAINING_SECRET = "whsec_" + "dGVzdC10cmFpbmluZy1zZWNyZXQtMzItYnl0ZXMhIQ=="
MLFLOW_SECRET = "mlflow-webhook-secret"


def signed_headers(
    body: bytes | str,
    *,
    secret: str = TRAINING_SECRET,
    msg_id: str | None = None,
    at: float | None = None,
) -> dict[str, str]:
    """Return Standard Webhooks headers for `body`, signed with `secret`."""
    text = body.decode() if isinstance(body, bytes) else body
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, text),
    }


def log_model(tracking_uri: str, *, constant: float, metrics: Mapping[str, float] | None = None,
              artifact_path: str = "model", git_commit: str = "") -> str:
    """Log a tiny real sklearn model that always predicts `constant`; return the run id."""
    import mlflow
    from sklearn.dummy import DummyRegressor

    mlflow.set_tracking_uri(tracking_uri)
    model = DummyRegressor(strategy="constant", constant=constant).fit([[0.0]], [constant])
    tags = {"mlflow.source.git.commit": git_commit} if git_commit else {}
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_metrics(dict(metrics or {"accuracy": 0.9}))
        mlflow.sklearn.log_model(model, name=artifact_path, pip_requirements=["scikit-learn"])
    return run.info.run_id


@dataclass
class Stack:
    """One configuration of the services, running as real processes."""

    name: str
    env: dict[str, str]
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def webhooks_url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEBHOOKS_PORT']}"

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.env['BOT_PORT']}"

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    def start(self, *services: str) -> None:
        """Start the named services (worker, webhooks, bot) and wait until they serve."""
        for service in services:
            self._start(service)

    def _start(self, service: str) -> None:
        args = {"worker": ["-m", "worker", "--concurrency", "2"], "webhooks": ["-m", "webhooks"],
                "bot": ["-m", "bot"]}[service]
        log = open(self.workdir / f"{service}.log", "ab")  # noqa: SIM115
        self.procs[service] = subprocess.Popen(
            [sys.executable, *args], env=self.env, cwd=self.workdir,
            stdout=log, stderr=subprocess.STDOUT,
        )
        ready = {
            "worker": lambda: b" ready." in self.log_bytes("worker"),
            "webhooks": lambda: _answers(f"{self.webhooks_url}/healthz"),
            "bot": lambda: _answers(f"{self.bot_url}/healthz"),
        }[service]
        devstack.wait_until(lambda: self._alive(service) and ready(), 60, f"{self.name} {service}")

    def _alive(self, service: str) -> bool:
        proc = self.procs[service]
        if proc.poll() is not None:
            raise RuntimeError(f"{service} exited {proc.returncode}: {self.log(service)[-2000:]}")
        return True

    def log_bytes(self, service: str) -> bytes:
        path = self.workdir / f"{service}.log"
        return path.read_bytes() if path.exists() else b""

    def log(self, service: str) -> str:
        return self.log_bytes(service).decode(errors="replace")

    def stop(self, *services: str) -> None:
        for service in services or list(self.procs):
            devstack.stop(self.procs.pop(service, None))

    def post_training(self, body: Any, *, headers: Mapping[str, str] | None = None,
                      **sign: Any) -> requests.Response:
        """POST a training event, signed unless `headers` are given."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = dict(headers) if headers is not None else signed_headers(raw, **sign)
        return requests.post(f"{self.webhooks_url}/hooks/training", data=raw, headers=hdrs,
                             timeout=10)


class StackFactory:
    """Start one Stack per distinct set of settings, each on its own Redis database."""

    def __init__(self, *, redis_base: str, mlflow_uri: str, slack, workdir: Path,
                 base_env: Mapping[str, str]):
        self.redis_base, self.mlflow_uri, self.slack = redis_base, mlflow_uri, slack
        self.workdir, self.base_env = workdir, dict(base_env)
        self.stacks: dict[tuple, Stack] = {}
        self.made = 0

    def get(self, services: tuple[str, ...] = ("worker", "webhooks"), **overrides: str) -> Stack:
        """Return a running stack for these settings, starting it on first use."""
        key = tuple(sorted(overrides.items()))
        if key not in self.stacks:
            stack = self.make(**overrides)
            self.stacks[key] = stack
        stack = self.stacks[key]
        stack.start(*[s for s in services if s not in stack.procs])
        return stack

    def make(self, *, redis_base: str = "", **overrides: str) -> Stack:
        """Create (but do not start) a stack with its own Redis database."""
        self.made += 1
        db = self.made  # database 0 is left to whoever else uses this Redis
        name = f"stack{db}"
        workdir = self.workdir / name
        workdir.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MLFLOW_", "REDIS"))}
        env.update(
            PYTHONPATH=str(REPO),
            MLFLOW_TRACKING_URI=self.mlflow_uri,
            REDIS_URL=f"{redis_base or self.redis_base}/{db % 16}",
            SLACK_API_URL=self.slack.api_url,
            TRAINING_WEBHOOK_SECRET=TRAINING_SECRET,
            MLFLOW_WEBHOOK_SECRET=MLFLOW_SECRET,
            WEBHOOKS_PORT=str(devstack.free_port()),
            BOT_PORT=str(devstack.free_port()),
            **self.base_env,
        )
        env.update(overrides)
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).flushdb()
        return Stack(name=name, env=env, workdir=workdir)

    def stop_all(self) -> None:
        for stack in self.stacks.values():
            stack.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False
