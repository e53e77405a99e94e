"""Test helpers: running service stacks, signed requests and small real models."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devkit.stack import (
    alive,
    descendants,
    free_port,
    service_env,
    stop,
    url_answers,
    wait_until,
)

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
    raw = body if isinstance(body, bytes) else body.encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time() if at is None else at))
    # Signed over the raw bytes, so even a body that is not UTF-8 carries a true signature.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def log_model(
    tracking_uri: str,
    *,
    constant: float,
    metrics: Mapping[str, float] | None = None,
    artifact_path: str = "model",
    git_commit: str = "",
) -> str:
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

    @property
    def queue(self) -> str:
        """The Redis list behind the stack's Celery queue."""
        return self.env["REGISTRY_BOT_QUEUE"]

    def start(self, *services: str) -> None:
        """Start the named services (worker, webhooks, bot) and wait until they serve."""
        for service in services:
            self._start(service)

    def _start(self, service: str) -> None:
        args = {
            "worker": ["-m", "worker", "--concurrency", "2"],
            "webhooks": ["-m", "webhooks"],
            "bot": ["-m", "bot"],
        }[service]
        log = open(self.workdir / f"{service}.log", "ab")  # noqa: SIM115
        since = len(self.log_bytes(service))  # a restart appends: look for "ready" after this
        self.procs[service] = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so a test can kill the worker whole (main and pool).
            process_group=0 if service == "worker" else None,
        )
        ready = {
            "worker": lambda: b" ready." in self.log_bytes("worker")[since:],
            "webhooks": lambda: url_answers(f"{self.webhooks_url}/healthz"),
            "bot": lambda: url_answers(f"{self.bot_url}/healthz"),
        }[service]
        wait_until(lambda: self._alive(service) and ready(), 60, f"{self.name} {service}")

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

    def kill_worker(self) -> int:
        """SIGKILL the worker's whole process group at once, as a lost node would; return
        how many processes died."""
        proc = self.procs.pop("worker")
        pids = [proc.pid, *descendants(proc.pid)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, "the worker's processes")
        return len(pids)

    def stop(self, *services: str) -> None:
        for service in services or list(self.procs):
            stop(self.procs.pop(service, None))

    def post_training(
        self, body: Any, *, headers: Mapping[str, str] | None = None, **sign: Any
    ) -> requests.Response:
        """POST a training event, signed unless `headers` are given."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = dict(headers) if headers is not None else signed_headers(raw, **sign)
        return requests.post(
            f"{self.webhooks_url}/hooks/training", data=raw, headers=hdrs, timeout=10
        )


class StackFactory:
    """Start one Stack per distinct set of settings, each on its own Redis database."""

    def __init__(
        self, *, redis_base: str, mlflow_uri: str, slack, workdir: Path, base_env: Mapping[str, str]
    ):
        self.redis_base, self.mlflow_uri, self.slack = redis_base, mlflow_uri, slack
        self.workdir, self.base_env = workdir, dict(base_env)
        self.stacks: dict[tuple, Stack] = {}
        self.made = 0
        self.session = uuid.uuid4().hex[:8]

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
        env = service_env(
            MLFLOW_TRACKING_URI=self.mlflow_uri,
            REDIS_URL=f"{redis_base or self.redis_base}/{db % 16}",
            SLACK_API_URL=self.slack.api_url,
            TRAINING_WEBHOOK_SECRET=TRAINING_SECRET,
            MLFLOW_WEBHOOK_SECRET=MLFLOW_SECRET,
            # A queue of its own, so a test session never takes another session's tasks.
            REGISTRY_BOT_QUEUE=f"registry-bot-test-{self.session}",
            WEBHOOKS_PORT=str(free_port()),
            BOT_PORT=str(free_port()),
            **self.base_env,
        )
        env.update(overrides)
        return Stack(name=name, env=env, workdir=workdir)

    def stop_all(self) -> None:
        """Stop every stack's processes, all at once rather than one after another."""
        for stack in self.stacks.values():
            for proc in stack.procs.values():
                if proc.poll() is None:
                    proc.terminate()
        for stack in self.stacks.values():
            stack.stop()


SLACK_SIGNING_SECRET = "test-signing-secret"
SLACK_ANSWER_TIMES: list[float] = []  # every signed request's answer time, for the report


def slack_post(
    bot_url: str,
    body: str,
    *,
    content_type: str,
    secret: str = SLACK_SIGNING_SECRET,
    at: float | None = None,
) -> requests.Response:
    """POST a request to the bot signed as Slack signs it; check it was answered within 3 s."""
    from slack_sdk.signature import SignatureVerifier

    ts = str(int(time.time() if at is None else at))
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
    }
    started = time.monotonic()
    resp = requests.post(f"{bot_url}/slack/events", data=body.encode(), headers=headers, timeout=10)
    elapsed = time.monotonic() - started
    SLACK_ANSWER_TIMES.append(elapsed)
    assert elapsed < 3.0, f"Slack request answered in {elapsed:.2f}s"
    return resp


def interaction(bot_url: str, payload: dict, **kw: Any) -> requests.Response:
    """Send an interactivity payload (button click or view submission)."""
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(payload)})
    return slack_post(bot_url, body, content_type="application/x-www-form-urlencoded", **kw)


def click(
    bot_url: str,
    slack,
    *,
    user: str,
    action_id: str,
    value: str,
    message_ts: str = "",
    channel: str = "CNOTICES",
    team: str = "T0TEST",
    tag: str = "",
) -> tuple[requests.Response, str]:
    """Click a button as `user`; return the answer and the response URL Slack would give."""
    response_url = slack.response_url(f"{tag or action_id}-{user}-{uuid.uuid4().hex[:8]}")
    payload = {
        "type": "block_actions",
        "team": {"id": team, "domain": "test"},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "api_app_id": "ATEST",
        "token": "legacy-verification-token",
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.abc",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel, "name": "models"},
        "message": {"type": "message", "ts": message_ts, "text": ""},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "decision",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return interaction(bot_url, payload), response_url


def submit_view(
    bot_url: str, view: dict, *, user: str, reason: str | None, team: str = "T0TEST"
) -> requests.Response:
    """Submit a modal the bot opened, with `reason` typed into its input."""
    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}
    payload = {
        "type": "view_submission",
        "team": {"id": team, "domain": "test"},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "api_app_id": "ATEST",
        "token": "legacy-verification-token",
        "trigger_id": f"{int(time.time())}.1.abc",
        "view": {
            **view,
            "id": f"V{uuid.uuid4().hex[:10].upper()}",
            "team_id": team,
            "state": {"values": values},
        },
    }
    return interaction(bot_url, payload)


def slash(
    bot_url: str,
    slack,
    text: str,
    *,
    user: str,
    command: str = "/registry",
    channel: str = "CNOTICES",
    team: str = "T0TEST",
) -> tuple[requests.Response, str]:
    """Send a slash command as Slack does; return the answer and its response URL."""
    from urllib.parse import urlencode

    response_url = slack.response_url(f"cmd-{user}-{uuid.uuid4().hex[:8]}")
    form = {
        "token": "legacy",
        "team_id": team,
        "team_domain": "test",
        "channel_id": channel,
        "channel_name": "models",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "ATEST",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.2.abc",
    }
    resp = slack_post(bot_url, urlencode(form), content_type="application/x-www-form-urlencoded")
    return resp, response_url


def mention_event(
    bot_url: str, text: str, *, user: str, channel: str = "CNOTICES", team: str = "T0TEST"
) -> requests.Response:
    """Send an app_mention event as Slack's Events API does."""
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@UBOT> {text}",
        "channel": channel,
        "ts": f"{time.time():.6f}",
        "event_ts": f"{time.time():.6f}",
        "team": team,
    }
    body = {
        "token": "legacy",
        "team_id": team,
        "api_app_id": "ATEST",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}],
    }
    return slack_post(bot_url, json.dumps(body), content_type="application/json")


class FaultyProxy:
    """An HTTP proxy in front of the MLflow server that can answer 500, stall or be down."""

    def __init__(self, upstream: str):
        import threading

        self.upstream = upstream.rstrip("/")
        self.mode, self.remaining, self.stall = "pass", 0, 0.0
        self.hits: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()

    def start(self) -> None:
        """Listen (again) on the proxy's port."""
        import threading

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: clients now get connection refused, as with a stopped server."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def fail(self, mode: str, count: int, stall: float = 0.0) -> None:
        """Answer the next `count` registry requests with `mode`: "500" or "stall"."""
        with self.lock:
            self.mode, self.remaining, self.stall = mode, count, stall

    def app(self, environ, start_response):
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        with self.lock:
            faulty = self.remaining > 0 and "/api/" in request.path
            mode = self.mode if faulty else "pass"
            self.remaining -= 1 if faulty else 0
        if mode == "500":
            self.hits.append((time.time(), request.path, 500))
            return Response('{"error_code": "INTERNAL_ERROR"}', 500)(environ, start_response)
        if mode == "stall":
            time.sleep(self.stall)
        upstream = requests.request(
            request.method,
            f"{self.upstream}{request.full_path}",
            data=request.get_data(),
            headers={k: v for k, v in request.headers if k.lower() != "host"},
            timeout=60,
        )
        self.hits.append((time.time(), request.path, upstream.status_code))
        return Response(
            upstream.content,
            upstream.status_code,
            content_type=upstream.headers.get("content-type"),
        )(environ, start_response)

    def close(self) -> None:
        self.stop()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def local_services(mlflow_uri: str, slack, *, clock=None, policy: str = "", **overrides: Any):
    """Build the worker's Services in this process: real MLflow and Slack double, our clock."""
    from registry.connect import build_services
    from registry.policy import Policy, parse_policy
    from registry.settings import Settings

    settings = Settings(
        mlflow_tracking_uri=mlflow_uri,
        slack_bot_token=slack.token,
        slack_channel="CNOTICES",
        slack_api_url=slack.api_url,
        approvers=("UAPPROVER1", "UAPPROVER2"),
        policy=parse_policy(policy, "policy.yaml") if policy else Policy.empty(),
        **overrides,
    )
    svc = build_services(settings)
    svc.clock = clock or time.time
    return svc
