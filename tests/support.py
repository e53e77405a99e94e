"""Test helpers: running service stacks, signed requests and small real models."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devkit import slack_requests
from devkit.stack import (
    alive,
    descendants,
    free_port,
    service_env,
    steady_port,
    stop,
    url_answers,
    wait_until,
)
from registry.views.modals import REASON_BLOCK, REASON_INPUT, ROLLBACK_MODAL
from registry.views.plans import ROLLBACK_CONFIRM

REPO = Path(__file__).resolve().parent.parent
TRAINING_SECRET = "whsec_" + "dGVzdC10cmFpbmluZy1zZWNyZXQtMzItYnl0ZXMhIQ=="
CANARY_SECRET = "whsec_" + "Y2FuYXJ5LXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzIQ=="
MLFLOW_SECRET = "mlflow-webhook-secret"
TOKEN = "xoxb-test-token"
SLACK_SIGNING_SECRET = "test-signing-secret"
SERVICES = ("worker", "webhooks", "bot")  # the full loop: events in, clicks and commands in
ALERTMANAGER_TOKEN = "test-alertmanager-token-0123456789"
GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def stamp(offset: float, *, within: bool) -> int:
    """Return a whole-second timestamp `offset` seconds from now (negative: in the past).

    Senders sign whole seconds, and cutting off the fraction can move a stamp toward now: one
    meant to be 301 s ahead can be signed 300.01 s ahead, inside a 300 s window. This one is
    rounded to at most `abs(offset)` from now when `within`, and at least that far when not.
    """
    at = time.time() + offset
    away = (offset > 0) != within  # round away from now
    return math.ceil(at) if away else math.floor(at)


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


def alert(
    model: str,
    *,
    status: str = "firing",
    fingerprint: str = "",
    starts_at: str = "",
    ends_at: str = "",
    alertname: str = "PredictionErrorRate",
    summary: str = "More than 5% of predictions fail",
    version: str = "",
    generator_url: str = "http://prometheus.example:9090/graph?g0.expr=errors&g0.tab=1",
    label: str = "model",
) -> dict[str, Any]:
    """Return one alert as Alertmanager sends it, for `model` (under the label `label`)."""
    labels = {"alertname": alertname, "severity": "page", label: model}
    if version:
        labels["version"] = version
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": summary, "description": "Error rate over the last 5 minutes"},
        "startsAt": starts_at or time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime()),
        "endsAt": ends_at or GO_ZERO_TIME,
        "generatorURL": generator_url,
        "fingerprint": fingerprint or uuid.uuid4().hex[:16],
    }


def resolved(firing: dict[str, Any]) -> dict[str, Any]:
    """Return the resolved form of a firing alert, as Alertmanager sends it."""
    ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {**firing, "status": "resolved", "endsAt": ended}


def alertmanager_payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """Return Alertmanager's webhook body (version 4) carrying `alerts`."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PredictionErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "registry-bot",
        "groupLabels": {"alertname": "PredictionErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": list(alerts),
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
    slack: Any = None  # the Slack double, where a Socket Mode bot connects

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
        since = len(self.log_bytes(service))  # a restart appends: look only at what it writes
        # The child writes to its own copy of the descriptor: ours is closed at once.
        with open(self.workdir / f"{service}.log", "ab") as log:
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
            "bot": self._bot_ready,
        }[service]
        wait_until(lambda: self._alive(service) and ready(), 60, f"{self.name} {service}")

    def _bot_ready(self) -> bool:
        """HTTP mode: /healthz answers; Socket Mode: the bot holds a link to the double."""
        token = self.env.get("SLACK_APP_TOKEN", "")
        if self.env.get("SLACK_TRANSPORT") == "socket":
            return self.slack.socket.links(token) > 0
        return url_answers(f"{self.bot_url}/healthz")

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


@contextmanager
def prediction_api(stack: Stack, model_name: str) -> Iterator[str]:
    """Run the prediction API for `model_name` on `stack`'s registry; yield its URL.

    Its poll (REFRESH_SECONDS=30) is far too slow to pass a test: a version it serves within
    seconds of a change came from the lifecycle event.
    """
    port = free_port()
    # The child writes to its own copy of the descriptor: ours is closed at once.
    with open(stack.workdir / f"serving-{model_name}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry.serving", "--model", model_name, "--port", str(port)],
            env={**stack.env, "REFRESH_SECONDS": "30"},
            cwd=stack.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: url_answers(f"{url}/version", status=200), 60, "prediction API")
        yield url
    finally:
        stop(proc)


def served_version(url: str) -> str | None:
    """Return the version the prediction API at `url` serves (None before the first load)."""
    return requests.get(f"{url}/version", timeout=5).json().get("version")


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
            CANARY_WEBHOOK_SECRET=CANARY_SECRET,
            MLFLOW_WEBHOOK_SECRET=MLFLOW_SECRET,
            # A queue of its own: no stack takes another's tasks, even when a session's
            # stacks outnumber Redis's 16 databases and two of them share one.
            REGISTRY_BOT_QUEUE=f"registry-bot-test-{self.session}-{name}",
            WEBHOOKS_PORT=str(free_port()),
            BOT_PORT=str(free_port()),
            **self.base_env,
        )
        env.update(overrides)
        return Stack(name=name, env=env, workdir=workdir, slack=self.slack)

    def stop_all(self) -> None:
        """Stop every stack's processes, all at once rather than one after another."""
        for stack in self.stacks.values():
            for proc in stack.procs.values():
                if proc.poll() is None:
                    proc.terminate()
        for stack in self.stacks.values():
            stack.stop()


SLACK_ANSWER_TIMES: list[float] = []  # every signed request's answer time, for the report


def slack_post(
    bot_url: str,
    body: str,
    *,
    content_type: str,
    secret: str = SLACK_SIGNING_SECRET,
    at: float | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """POST a request to the bot signed as Slack signs it; check it was answered within 3 s."""
    headers = {
        **slack_requests.signed_headers(body, secret, at=at, content_type=content_type),
        **(extra_headers or {}),
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


def click(bot_url: str, slack, **kw: Any) -> tuple[requests.Response, str]:
    """Click a button (what `click_payload` takes) as `user`; return the answer and the
    response URL Slack would give. `message` is the channel message clicked, sent whole."""
    payload, response_url = click_payload(slack, **kw)
    return interaction(bot_url, payload), response_url


def approve_click(
    stack, slack, model: str, version: str, user: str, ts: str, channel: str = "CNOTICES"
) -> str:
    """Click Approve on `model` v`version`'s notice (message `ts` in `channel`) as `user`;
    assert the bot took the click and return the response URL its answer goes to."""
    from registry.views.notice import APPROVE_ACTION, button_value

    resp, url = click(
        stack.bot_url,
        slack,
        user=user,
        action_id=APPROVE_ACTION,
        value=button_value(model, version),
        message_ts=ts,
        channel=channel,
    )
    assert resp.status_code == 200, resp.text
    return url


def click_payload(
    slack,
    *,
    user: str,
    action_id: str,
    value: str,
    message_ts: str = "",
    channel: str = "CNOTICES",
    team: str = "T0TEST",
    tag: str = "",
    message: dict | None = None,
) -> tuple[dict, str]:
    """Return the block_actions payload Slack sends for a click on a message, and its URL."""
    response_url = slack.response_url(f"{tag or action_id}-{user}-{uuid.uuid4().hex[:8]}")
    payload = slack_requests.click_payload(
        user=user,
        action_id=action_id,
        value=value,
        response_url=response_url,
        channel=channel,
        team=team,
        message_ts=message_ts,
        message=message,
    )
    return payload, response_url


def home_click_payload(
    home: dict, *, user: str, action_id: str, value: str, team: str = "T0TEST"
) -> dict:
    """Return the block_actions payload Slack sends for a click in a Home tab: no response URL."""
    payload = slack_requests.click_payload(
        user=user, action_id=action_id, value=value, response_url="", channel="", team=team
    )
    for key in ("channel", "message", "response_url"):
        del payload[key]
    payload["container"] = {"type": "view", "view_id": home["id"]}
    payload["view"] = home
    payload["actions"] = [slack_requests.button(action_id, value, block_id="home_decide_0")]
    return payload


def submit_view(
    bot_url: str, view: dict, *, user: str, reason: str | None, team: str = "T0TEST"
) -> requests.Response:
    """Submit a modal the bot opened, with `reason` typed into its input."""
    return interaction(bot_url, view_payload(view, user=user, reason=reason, team=team))


def view_payload(view: dict, *, user: str, reason: str | None, team: str = "T0TEST") -> dict:
    """Return the view_submission payload for a modal with `reason` typed into its input."""
    values = {REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}}
    return slack_requests.view_submission({**view, "id": ""}, user=user, values=values, team=team)


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

    form, response_url = slash_form(
        slack, text, user=user, command=command, channel=channel, team=team
    )
    resp = slack_post(bot_url, urlencode(form), content_type="application/x-www-form-urlencoded")
    return resp, response_url


def slash_form(
    slack,
    text: str,
    *,
    user: str,
    command: str = "/registry",
    channel: str = "CNOTICES",
    team: str = "T0TEST",
) -> tuple[dict[str, str], str]:
    """Return the fields Slack sends for a slash command, and its response URL."""
    response_url = slack.response_url(f"cmd-{user}-{uuid.uuid4().hex[:8]}")
    form = slack_requests.command_form(
        text, user=user, response_url=response_url, channel=channel, team=team, command=command
    )
    return form, response_url


def mention_event(
    bot_url: str,
    text: str,
    *,
    user: str,
    channel: str = "CNOTICES",
    team: str = "T0TEST",
    body: dict | None = None,
    retry: int = 0,
) -> requests.Response:
    """Send an app_mention event as the Events API does (`retry`: as its nth redelivery)."""
    body = body or mention_body(text, user=user, channel=channel, team=team)
    headers = (
        {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else {}
    )
    return slack_post(
        bot_url, json.dumps(body), content_type="application/json", extra_headers=headers
    )


def mention_body(text: str, *, user: str, channel: str = "CNOTICES", team: str = "T0TEST") -> dict:
    """Return the Events API body of an app_mention."""
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
    return body


def home_opened_body(user: str, *, team: str = "T0TEST") -> dict:
    """Return the Events API body Slack sends when `user` opens the app's Home tab."""
    event = {
        "type": "app_home_opened",
        "user": user,
        "channel": f"D{user[1:]}",
        "tab": "home",
        "event_ts": f"{time.time():.6f}",
    }
    return {
        "token": "legacy",
        "team_id": team,
        "api_app_id": "ATEST",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}],
    }


def open_home(bot_url: str, user: str, *, team: str = "T0TEST") -> requests.Response:
    """Open the app's Home tab as `user`, over the Events API."""
    body = json.dumps(home_opened_body(user, team=team))
    return slack_post(bot_url, body, content_type="application/json")


SOCKET_ACK_TIMES: list[float] = []  # every Socket Mode envelope's ack time, for the report
FIGURES: list[str] = []  # lines a test measured, printed at the end of the run


def over_socket(slack, type: str, payload: dict, **push: Any):
    """Push an envelope to the Socket Mode bot; check it is acknowledged within 3 s."""
    envelope = slack.socket.push(type, payload, **push)
    acked = slack.socket.wait_for_ack(envelope.envelope_id, timeout=3.0)
    assert acked is not None, f"{type} envelope not acknowledged within 3 s"
    SOCKET_ACK_TIMES.append(acked.ack_seconds)
    return acked


def promote(stack: Stack, slack, mlflow_uri: str, model: str, *, constant: float) -> str:
    """Train, send the event, approve the notice; return the version once it is announced."""
    from mlflow import MlflowClient

    from registry.views.notice import APPROVE_ACTION, button_value

    run_id = log_model(mlflow_uri, constant=constant)
    body = {"model_name": model, "run_id": run_id, "requested_by": "UREQUESTER"}
    assert stack.post_training(body).status_code == 202
    client = MlflowClient(mlflow_uri)

    def noticed():
        found = client.search_model_versions(f"name = '{model}' and run_id = '{run_id}'")
        return found[0] if found and found[0].tags.get("registry_bot.notice_ts") else None

    mv = wait_for(noticed, f"the notice of {model}'s new version", 30)
    value, ts = button_value(model, mv.version), mv.tags["registry_bot.notice_ts"]
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=value,
        message_ts=ts,
    )
    tags = lambda: client.get_model_version(model, mv.version).tags  # noqa: E731
    wait_for(lambda: tags().get("registry_bot.announced"), f"{model} v{mv.version} promoted", 30)
    return mv.version


class FaultyProxy:
    """An HTTP proxy in front of the MLflow server that can answer 500, stall or be down."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.mode, self.remaining, self.stall = "pass", 0, 0.0
        self.hang_rule = None  # (request -> bool, seconds): see hang_when
        self.hung = threading.Event()
        self.release = threading.Event()
        self.hits: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        self.port = steady_port()  # stop() and start() again must find it free
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()

    def start(self) -> None:
        """Listen (again) on the proxy's port."""
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

    def hang_when(self, rule, seconds: float) -> None:
        """Hold each request `rule(request)` picks for up to `seconds`, then drop it unsent.

        Dropped, never forwarded late: the client is presumed dead by then (a worker
        killed while it waited), and a write landing after its death would hide the gap.
        """
        self.hung.clear()
        self.release.clear()
        with self.lock:
            self.hang_rule = (rule, seconds)

    def app(self, environ, start_response):
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        rule = self.hang_rule
        if rule is not None and rule[0](request):
            self.hung.set()
            self.release.wait(rule[1])
            self.hits.append((time.time(), request.path, 503))
            return Response('{"error_code": "TEMPORARILY_UNAVAILABLE"}', 503)(
                environ, start_response
            )
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
        self.release.set()
        self.stop()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Ticking(Clock):
    """A clock a second later at each look, so that every record entry has its own time and
    which change came last is plain from the record."""

    def __call__(self) -> float:
        self.advance(1.0)
        return self.now


def local_services(mlflow_uri: str, slack, *, clock=None, policy: str = "", **overrides: Any):
    """Build the worker's Services in this process: real MLflow and Slack double, our clock."""
    from registry.process.connect import build_services
    from registry.rules.policy import Policy, parse_policy
    from registry.rules.settings import Settings

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


def mlflow_signed_headers(
    body: bytes, secret: str = MLFLOW_SECRET, *, delivery_id: str = "d-forged"
) -> dict[str, str]:
    """Return the headers MLflow's own webhook sends, signed over `body` with `secret`."""
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{delivery_id}.{ts}.{body.decode()}".encode(), hashlib.sha256)
    return {
        "content-type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }


def run_python(
    *args: str, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run `python <args>` in the repo with a clean settings environment."""
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def primitive(value: Any) -> bool:
    """Say whether `value` is what a task may take: JSON's own types, all the way down."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and primitive(v) for k, v in value.items())
    if isinstance(value, list):
        return all(primitive(v) for v in value)
    return isinstance(value, str | int | float | bool | None)


# -- waiting for and reading what the running services did ----------------------------


def wait_for(check, what: str, timeout: float = 20.0, interval: float = 0.1):
    """Poll `check` until it returns something truthy and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def notices_for(slack, model_name: str) -> list:
    """Return the chat.postMessage calls that are Staging notices for `model_name`."""
    return [
        c
        for c in slack.calls("chat.postMessage")
        if c.status == 200
        and c.params.get("text", "").startswith(f"{model_name} v")
        and not c.params.get("thread_ts")
    ]


def fake_services(*, clock=None, approvers=("UA", "UB"), emails=None, policy: str = "", **settings):
    """Build Services over the in-memory fakes, with a hand-moved clock."""
    from registry.ports.services import Services
    from registry.rules.policy import Policy, parse_policy
    from registry.rules.settings import Settings
    from tests.fakes import FakeDirectory, FakeGateway, RecordingNotifier

    clock = clock or Clock(1_000_000.0)
    config = Settings(
        mlflow_tracking_uri="fake",
        slack_channel="CNOTICES",
        approvers=tuple(approvers),
        policy=parse_policy(policy, "policy.yaml") if policy else Policy.empty(),
        **settings,
    )
    return Services(
        gateway=FakeGateway(clock),
        notifier=RecordingNotifier(),
        settings=config,
        directory=FakeDirectory(approvers, emails),
        clock=clock,
    )


def unacked_on(client, queue: str) -> int:
    """Count the messages of `queue` a worker holds unacknowledged.

    kombu keeps every queue's unacked messages in one hash, shared by every test
    session on the Redis; each value is [message, exchange, routing_key].
    """
    return sum(1 for raw in client.hvals("unacked") if json.loads(raw)[2] == queue)


def wait_idle(stack, settle: float = 1.5, timeout: float = 30.0) -> None:
    """Wait until the stack's queue is empty, nothing is unacknowledged, for `settle` seconds."""
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + timeout
    quiet_since, last = time.monotonic(), None
    while time.monotonic() < deadline:
        state = (client.llen(stack.queue), unacked_on(client, stack.queue))
        if state != (0, 0) or state != last:
            quiet_since = time.monotonic()
        last = state
        if state == (0, 0) and time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.1)
    raise AssertionError(f"{stack.name}'s worker did not go idle within {timeout}s")


def wait_notice(slack, model_name: str, timeout: float = 20.0):
    """Wait for the first Staging notice for `model_name` and return its call."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = notices_for(slack, model_name)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no notice for {model_name} within {timeout}s")


def buttons(call) -> dict[str, dict]:
    """Map button text to button for a recorded message."""
    return {
        el["text"]["text"]: el
        for block in call.params.get("blocks", [])
        if block.get("type") == "actions"
        for el in block["elements"]
        if el.get("type") == "button"
    }


def updates_of(slack, ts: str) -> list:
    """Return the chat.update calls that redrew the message at `ts`."""
    return [c for c in slack.calls("chat.update") if c.params.get("ts") == ts]


def stage_of(mlflow_server: str, model_name: str, version: str) -> str:
    """Return the version's MLflow stage."""
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server).get_model_version(model_name, version).current_stage


def production_versions(mlflow_server: str, model_name: str) -> list[str]:
    """Return the model's versions now in Production, sorted."""
    from mlflow import MlflowClient

    versions = MlflowClient(mlflow_server).search_model_versions(f"name = '{model_name}'")
    return sorted(v.version for v in versions if v.current_stage == "Production")


def stage(stack, slack, mlflow_server, model_name, *, constant=1.0, requested_by="UREQUESTER"):
    """Train, send the event, wait for the notice; return (version, notice ts)."""
    from mlflow import MlflowClient

    before = len(notices_for(slack, model_name))
    run_id = log_model(mlflow_server, constant=constant)
    body = {"model_name": model_name, "run_id": run_id, "requested_by": requested_by}
    assert stack.post_training(body).status_code == 202
    deadline = time.monotonic() + 20
    while len(notices_for(slack, model_name)) <= before:
        assert time.monotonic() < deadline, "no notice"
        time.sleep(0.1)
    versions = MlflowClient(mlflow_server).search_model_versions(f"name = '{model_name}'")
    newest = max(versions, key=lambda v: int(v.version))
    wait_for(
        lambda: (
            MlflowClient(mlflow_server)
            .get_model_version(model_name, newest.version)
            .tags.get("registry_bot.notice_ts")
        ),
        "notice tag",
    )
    tags = MlflowClient(mlflow_server).get_model_version(model_name, newest.version).tags
    return newest.version, tags["registry_bot.notice_ts"]


def answered(slack, response_url: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
    """Wait for `count` posts to a response URL; return their bodies."""
    from urllib.parse import quote

    path = "/response/" + quote(response_url.rsplit("/", 1)[-1], safe="")
    calls = wait_for(
        lambda: (lambda c: c if len(c) >= count else None)(
            [c for c in slack.calls("response_url") if c.path == path]
        ),
        path,
        timeout,
    )
    return [c.params for c in calls]


def confirm(loop, slack, plan_reply: dict, user: str, action=ROLLBACK_CONFIRM):
    """Click a rollback plan's Confirm (or `action`) button as `user`; return its response URL."""
    button = button_in(plan_reply, action)
    resp, url = click(loop.bot_url, slack, user=user, action_id=action, value=button["value"])
    assert resp.status_code == 200
    return url


def confirm_with_reason(loop, slack, plan_reply: dict, user: str, reason: str | None = None):
    """Click a command plan's Confirm, then submit the reason modal it opens: with `reason`,
    or as prefilled (the command's reason). Return the plan's response URL."""
    opened_before = len(slack.calls("views.open"))
    url = confirm(loop, slack, plan_reply, user)
    view = wait_for(lambda: slack.calls("views.open")[opened_before:], "views.open")[-1].params[
        "view"
    ]
    assert view["callback_id"] == ROLLBACK_MODAL
    [field] = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["optional"] is True
    typed = field["element"].get("initial_value") if reason is None else reason
    resp = submit_view(loop.bot_url, view, user=user, reason=typed)
    assert resp.status_code == 200 and not resp.content.strip()  # the modal closes
    return url


def version_tags(mlflow_uri: str, model: str, version: str) -> dict[str, str]:
    """Return a version's tags as MLflow has them now."""
    from mlflow import MlflowClient

    return dict(MlflowClient(mlflow_uri).get_model_version(model, version).tags)


def stage_and_wait(
    stack: Stack, mlflow_uri: str, model: str, *, constant: float, requested_by: str = "UREQUESTER"
) -> tuple[str, str, str]:
    """Train, send the event and wait for the notice; return (version, channel, notice ts)."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    before = {v.version for v in client.search_model_versions(f"name = '{model}'")}
    run_id = log_model(mlflow_uri, constant=constant)
    body = {"model_name": model, "run_id": run_id, "requested_by": requested_by}
    assert stack.post_training(body).status_code == 202
    new = wait_for(
        lambda: [
            v.version
            for v in client.search_model_versions(f"name = '{model}'")
            if v.version not in before
        ],
        f"a new version of {model}",
    )[0]
    tags = wait_for(
        lambda: (lambda t: t if t.get("registry_bot.notice_ts") else None)(
            version_tags(mlflow_uri, model, new)
        ),
        f"{model} v{new}'s notice",
    )
    return new, tags["registry_bot.notice_channel"], tags["registry_bot.notice_ts"]


def message_in(slack, channel: str, ts: str) -> dict:
    """Return the channel's message at `ts` as the double holds it now (with its replies)."""
    return next(m for m in slack.messages(channel) if m["ts"] == ts)


def button_texts(blocks: list[dict]) -> list[str]:
    """Return the texts of a message's buttons, in order."""
    return [
        el["text"]["text"]
        for block in blocks or []
        if block.get("type") == "actions"
        for el in block["elements"]
        if el.get("type") == "button"
    ]


def said_to(slack, response_url: str, timeout: float = 15.0) -> str:
    """Wait for what the bot or worker said through a click's response URL."""
    from urllib.parse import quote

    path = "/response/" + quote(response_url.rsplit("/", 1)[-1], safe="")
    found = wait_for(
        lambda: [c for c in slack.calls("response_url") if c.path == path], path, timeout=timeout
    )
    reply = found[-1].params
    assert reply.get("response_type") == "ephemeral" and reply.get("replace_original") is False
    return reply["text"]


def button_in(message: dict, action_id: str) -> dict:
    """Return the button with `action_id` in a message's blocks."""
    return next(
        el
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for el in block["elements"]
        if el.get("action_id") == action_id
    )


# What the kubelet injects into every pod of a namespace with Services named bot and webhooks
# (unless the pod sets enableServiceLinks: false): docker-link variables, not our settings.
SERVICE_LINKS = {
    "BOT_PORT": "tcp://10.0.0.1:3000",
    "BOT_PORT_3000_TCP": "tcp://10.0.0.1:3000",
    "BOT_SERVICE_HOST": "10.0.0.1",
    "BOT_SERVICE_PORT": "3000",
    "WEBHOOKS_PORT": "tcp://10.0.0.2:8000",
    "WEBHOOKS_SERVICE_HOST": "10.0.0.2",
    "REDIS_PORT": "tcp://10.0.0.3:6379",
}


def metric_families() -> list:
    """Return every metric family the services register (worker, bot, webhooks, the
    prediction API and the queue's backlog), each from its own definitions."""
    from prometheus_client import CollectorRegistry

    from registry.adapters.queue import Producer
    from registry.process.backlog import QueueCollector
    from registry.process.metrics import BotMetrics, WorkerMetrics
    from registry.rules.settings import Settings
    from registry.serving.api import PredictionMetrics
    from webhooks.app import Receiver

    settings = Settings(mlflow_tracking_uri="http://mlflow:5000", redis_url="redis://x:1/0")
    registries = [CollectorRegistry(), CollectorRegistry()]
    WorkerMetrics(registries[0])
    BotMetrics(registries[1])
    registries.append(Receiver(settings, Producer(settings)).metrics)
    registries.append(PredictionMetrics().registry)
    families = [f for r in registries for f in r.collect()]
    return families + list(QueueCollector(None, "q").describe())  # type: ignore[arg-type]
