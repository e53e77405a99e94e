"""`make demo`: the whole approval loop on one machine, with the browser sandbox as Slack."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from devkit import gate_demo, stack
from devkit.slack_double import SlackDouble
from registry.rules.text import format_number

REPO = stack.REPO
MODEL = "churn"
EXPERIMENT = "churn-demo"
CHANNEL = "CDEMO"
TEAM = "T0DEMO"
TOKEN = "xoxb-demo-sandbox-token"
APP_TOKEN = "xapp-demo-sandbox-token"  # DEMO_SOCKET_MODE=1: the bot runs in Socket Mode
SIGNING_SECRET = "demo-signing-secret"
TRAINING_SECRET = "whsec_" + base64.b64encode(b"registry-bot-demo-training-key!!").decode()
ALERTMANAGER_TOKEN = "demo-alertmanager-token-0123456789"
ALERT_NAME = "PredictionErrorRate"
USERS = {
    "UADA": {"name": "ada", "email": "ada@example.com", "role": "approver"},
    "UGRACE": {"name": "grace", "email": "grace@example.com", "role": "approver"},
    "URITA": {"name": "rita", "email": "rita@example.com", "role": "requester, not an approver"},
    "UOLAF": {"name": "olaf", "email": "olaf@example.com", "role": "not an approver"},
}
APPROVERS = ("UADA", "UGRACE")
REQUESTER = "URITA"
PORTS = (  # service, variable, default
    ("sandbox", "DEMO_SANDBOX_PORT", 3400),
    ("mlflow", "DEMO_MLFLOW_PORT", 5050),
    ("webhooks", "DEMO_WEBHOOKS_PORT", 8000),
    ("bot", "DEMO_BOT_PORT", 3000),
    ("predict", "DEMO_PREDICT_PORT", 8100),
    # A Redis of the demo's own, started with it and stopped with it: never one a REDIS_URL
    # names, whose data the demo would have to share or empty.
    ("redis", "DEMO_REDIS_PORT", 6390),
)
MARKER = ".registry-bot-demo"  # only a directory carrying this is ever wiped
SERVICES: dict[str, list[str]] = {
    "worker": ["-m", "worker", "--concurrency", "2"],
    "scheduler": ["-m", "worker", "beat"],
    "webhooks": ["-m", "webhooks"],
    "bot": ["-m", "bot"],
}
MLFLOW_ENV = {"MLFLOW_WEBHOOK_CACHE_TTL": "1"}
POLICY = Path(__file__).with_name("demo-policy.yaml")  # gates, so notices show verdicts
START_TIMEOUT = 90.0
STOP_TIMEOUT = 8.0

PORT_BUSY = (
    "registry-bot demo: port {port} ({var}) is already in use; stop what listens there "
    "or set {var} to a free port"
)
PORT_BAD = "registry-bot demo: {var} must be a port number (1-65535), not {value!r}"
SOCKET_BAD = "registry-bot demo: DEMO_SOCKET_MODE must be 1 or 0, not {value!r}"
PORT_TWICE = "registry-bot demo: {a} and {b} name the same port {port}"
NOT_OURS = (
    "registry-bot demo: {path} exists and is not a demo directory, so it is not wiped; "
    "set DEMO_DIR to another place"
)
NO_REDIS = "registry-bot demo: {reason}"
NO_NOTICE = "registry-bot demo: the Staging notice did not arrive; see {log}"
NO_DEMO = "registry-bot demo: no demo answers at {url}; start one with `make demo`"
FIRED = (
    "Alertmanager posted {alert} for {model}{version}: handled {handled}; what the guard "
    "makes of it (a rollback plan, or why there is none) follows in the channel in a moment."
)
FIRED_UNHANDLED = (
    "Alertmanager posted {alert} for {model}{version}: handled 0, so no plan. The guard only "
    "takes alerts for a Production version promoted in the last 24h with an earlier one to go "
    "back to: approve a second run first."
)
NO_SERVING = "  (no prediction API yet: registry.serving is not installed)"
SERVING_FAILED = "  prediction API did not start; see {log}"
STARTING = "registry-bot demo: starting (files in {root}, wiped at every start)"
STARTED = "  {name:<10} pid {pid:<8} log {log}"
REDIS_STARTED = (
    "  redis      pid {pid:<8} {url}: the demo's own, emptied with it (nothing else uses it)"
)
STARTING_MLFLOW = "  mlflow     starting its server on port {port} (about 10 s)…"
WAITING = "  waiting for {names} to be ready…"
TRAINING = "  training the first churn model and sending its training event…"
WAITING_NOTICE = "  waiting for the worker to stage it and post its notice…"
STARTING_PREDICT = "  starting the prediction API on port {port}…"
SOCKET_MODE = "  bot        in Socket Mode: the sandbox pushes envelopes over its WebSocket"
SENT = (
    "Sent training run {run} of {model} (accuracy {accuracy}, f1 {f1}) as {who}; "
    "its notice follows in a moment."
)
READY = """
  sandbox     {sandbox}/
  MLflow UI   {mlflow}/#/models/{model}
  prediction  {predict}
  logs        {logs}
  ports       {ports} (all on 127.0.0.1; DEMO_<NAME>_PORT moves one)

Next: open the sandbox and click Approve as ada.
More runs: the sandbox's "Send another training run" button, or `make demo-event`.
Once a second run is approved, "Fire an alert" posts an alert as Alertmanager would.

registry-bot demo is ready ({seconds:.0f} s). Ctrl-C stops everything it started."""
STOPPING = "registry-bot demo: stopping…"
STOPPED = "registry-bot demo: stopped."


class DemoError(Exception):
    """The demo cannot go on; the message is one line for the person who started it."""


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo keeps its files and which ports its services use."""

    root: Path
    ports: dict[str, int]
    socket_mode: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DemoConfig:
        """Read DEMO_DIR, DEMO_*_PORT and DEMO_SOCKET_MODE; refuse malformed ports."""
        env = os.environ if env is None else env
        ports: dict[str, int] = {}
        for service, var, default in PORTS:
            value = env.get(var, "").strip() or str(default)
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise DemoError(PORT_BAD.format(var=var, value=value))
            ports[service] = int(value)
        _distinct(ports)
        root = Path(env.get("DEMO_DIR", "").strip() or ".demo").resolve()
        socket_mode = env.get("DEMO_SOCKET_MODE", "").strip().lower() or "0"
        if socket_mode not in ("0", "1", "false", "true", "no", "yes"):
            raise DemoError(SOCKET_BAD.format(value=socket_mode))
        return cls(root, ports, socket_mode in ("1", "true", "yes"))

    def url(self, service: str) -> str:
        """Return a service's base URL."""
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        """Return the log file of one service."""
        return self.logs / f"{name}.log"


def _distinct(ports: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    variables = {service: var for service, var, _ in PORTS}
    for service, port in ports.items():
        if port in seen:
            raise DemoError(
                PORT_TWICE.format(a=variables[seen[port]], b=variables[service], port=port)
            )
        seen[port] = service


def check_ports(config: DemoConfig) -> None:
    """Refuse to start when any of the demo's ports is taken."""
    for service, var, _ in PORTS:
        port = config.ports[service]
        if stack.port_in_use(port):
            raise DemoError(PORT_BUSY.format(port=port, var=var))


def prepare_dir(root: Path) -> None:
    """Wipe the demo directory (only ever one the demo made), so every run starts afresh."""
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise DemoError(NOT_OURS.format(path=root))
    shutil.rmtree(root, ignore_errors=True)
    (root / "logs").mkdir(parents=True)
    (root / MARKER).write_text("made by `python -m devkit.demo`; wiped at every start\n")


# -- processes -------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process the demo started, stopped together: services first, then their stores."""

    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def add(self, name: str, proc: subprocess.Popen) -> subprocess.Popen:
        """Remember a started process."""
        self.started.append((name, proc))
        return proc

    def stop(self) -> None:
        """Terminate everything, kill what does not exit in time, and any stray descendant."""
        tree = stack.descendants(os.getpid())  # before children are reparented
        stores = {"mlflow", "redis"}
        _stop_all([p for name, p in self.started if name not in stores])
        _stop_all([p for name, p in self.started if name in stores])
        _kill_strays(tree)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _kill_strays(pids: list[int]) -> None:
    """Kill descendants that outlived their parents (pool workers, server helpers)."""
    alive = [pid for pid in pids if stack.alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if stack.alive(pid)]
            time.sleep(0.05)


def demo_env(config: DemoConfig, redis_url: str) -> dict[str, str]:
    """Return the environment every service runs with: the demo's settings and no others."""
    socket = (
        {"SLACK_APP_TOKEN": APP_TOKEN, "SLACK_TRANSPORT": "socket"} if config.socket_mode else {}
    )
    return stack.service_env(
        **socket,
        MLFLOW_TRACKING_URI=config.url("mlflow"),
        REDIS_URL=redis_url,
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_CHANNEL=CHANNEL,
        SLACK_API_URL=config.url("sandbox") + "/api/",
        APPROVERS=",".join(APPROVERS),
        POLICY_FILE=str(POLICY),
        TRAINING_WEBHOOK_SECRET=TRAINING_SECRET,
        ALERTMANAGER_TOKEN=ALERTMANAGER_TOKEN,
        WEBHOOKS_PORT=str(config.ports["webhooks"]),
        WEBHOOKS_URL=config.url("webhooks"),
        BOT_PORT=str(config.ports["bot"]),
        MLFLOW_GATE_TOKEN=gate_demo.GATE_TOKEN,
    )


def start_service(
    config: DemoConfig, procs: Processes, name: str, args: list[str], env: Mapping[str, str]
) -> subprocess.Popen:
    """Start `python <args>` in the demo directory, logging to logs/<name>.log."""
    with open(config.log(name), "ab") as log:
        # The .env of whatever directory make ran in must not configure the demo: run in ours.
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=dict(env),
            cwd=config.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    procs.add(name, proc)
    print(STARTED.format(name=name, pid=proc.pid, log=_shown(config.log(name))), flush=True)
    return proc


def wait_ready(
    config: DemoConfig,
    name: str,
    proc: subprocess.Popen,
    check: Callable[[], bool],
    timeout: float = START_TIMEOUT,
) -> None:
    """Wait until a service is ready; fail with its log's last line if it exits first."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise DemoError(
                f"registry-bot demo: {name} exited with {proc.returncode}: "
                f"{_last_line(config.log(name))}"
            )
        return check()

    try:
        stack.wait_until(ready, timeout, name, interval=0.2)
    except TimeoutError as exc:
        raise DemoError(f"registry-bot demo: {exc}; see {_shown(config.log(name))}") from None


def readiness(
    config: DemoConfig, name: str, double: SlackDouble | None = None
) -> Callable[[], bool]:
    """Return the check that says a service is serving."""
    if name == "bot" and config.socket_mode and double is not None:
        return lambda: double.socket.links(APP_TOKEN) > 0  # no HTTP: it holds a link instead
    if name == "worker":
        return lambda: b" ready." in _read(config.log("worker"))
    if name == "scheduler":
        return lambda: b"beat: Starting" in _read(config.log("scheduler"))
    return lambda: stack.url_answers(f"{config.url(name)}/healthz")


def demo_redis(config: DemoConfig, procs: Processes) -> str:
    """Start the demo's own Redis (no file kept) on DEMO_REDIS_PORT; return its URL."""
    port = config.ports["redis"]
    try:
        proc = stack.start_redis(port, config.root / "redis")
    except (RuntimeError, TimeoutError) as exc:  # no redis-server here, or it did not start
        raise DemoError(NO_REDIS.format(reason=exc)) from None
    procs.add("redis", proc)
    url = f"redis://127.0.0.1:{port}/0"
    print(REDIS_STARTED.format(url=url, pid=proc.pid), flush=True)
    return url


def start_mlflow(
    config: DemoConfig, procs: Processes, services: Mapping[str, str] | None = None
) -> None:
    """Start `mlflow server` on SQLite with local artifacts in the demo directory; behind
    the gate, with the `services`' settings for it, when they are given."""
    # It blocks until /health answers; a signal meanwhile leaves the pid to Processes.stop's
    # sweep of every descendant.
    print(STARTING_MLFLOW.format(port=config.ports["mlflow"]), flush=True)
    proc = stack.start_mlflow_server(
        config.ports["mlflow"],
        config.root / "mlflow",
        env={**MLFLOW_ENV, **gate_demo.mlflow_gate_env(services or {})},
        log_path=config.log("mlflow"),
        extra_args=gate_demo.APP_ARGS if services else (),
    )
    procs.add("mlflow", proc)
    print(STARTED.format(name="mlflow", pid=proc.pid, log=_shown(config.log("mlflow"))), flush=True)


def serving_available() -> bool:
    """Say whether `python -m registry.serving` can run here."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("registry.serving")
        if spec is None:
            return False
        if spec.submodule_search_locations is None:
            return True
        return importlib.util.find_spec("registry.serving.__main__") is not None
    except ImportError:
        return False


def start_prediction_api(config: DemoConfig, procs: Processes, env: Mapping[str, str]) -> None:
    """Start the prediction API for the demo model, if this checkout has one."""
    if not serving_available():
        print(NO_SERVING, flush=True)
        return
    port = config.ports["predict"]
    print(STARTING_PREDICT.format(port=port), flush=True)
    args = ["-m", "registry.serving", "--model", MODEL, "--port", str(port)]
    proc = start_service(config, procs, "predict", args, env)
    try:
        wait_ready(config, "predict", proc, lambda: stack.port_in_use(port), 60)
    except DemoError:
        print(SERVING_FAILED.format(log=_shown(config.log("predict"))), flush=True)


# -- the sandbox -----------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """Keep the page's polling out of the terminal."""

    def log(self, type: str, message: str, *args: Any) -> None:
        logging.getLogger("devkit.sandbox").debug(message, *args)


@dataclass
class SandboxServer:
    """The sandbox, served in this process on its own thread."""

    double: SlackDouble
    server: BaseWSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        """Stop serving and free the ports."""
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()
        self.double.socket.stop()


def start_sandbox(
    config: DemoConfig,
    on_train: Callable[[], str | Mapping[str, str]],
    on_alert: Callable[[], str] | None = None,
) -> SandboxServer:
    """Serve the Slack Web API and the channel page on the sandbox port."""
    from devkit.sandbox.app import create_sandbox

    port = config.ports["sandbox"]
    double = SlackDouble(token=TOKEN, app_token=APP_TOKEN, team_id=TEAM, users=USERS, port=port)
    double.socket.start()  # the sandbox serves the Web API itself; links need their own port
    app = create_sandbox(
        double=double,
        bot_url=config.url("bot"),
        signing_secret=SIGNING_SECRET,
        channel=CHANNEL,
        predict_url=config.url("predict") if serving_available() else "",
        on_train=on_train,
        on_alert=on_alert,
        team_id=TEAM,
        socket_mode=config.socket_mode,
    )
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox", daemon=True
    )
    thread.start()
    print(STARTED.format(name="sandbox", pid=os.getpid(), log="(this process)"), flush=True)
    return SandboxServer(double, server, thread)


def wait_for_notice(config: DemoConfig, double: SlackDouble, timeout: float = 60) -> None:
    """Wait until the worker has posted the first Staging notice."""
    try:
        double.wait_for(
            "chat.postMessage", lambda call: not call.params.get("thread_ts"), timeout=timeout
        )
    except AssertionError:
        raise DemoError(NO_NOTICE.format(log=_shown(config.log("worker")))) from None


# -- training --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedRun:
    """A logged training run: its id, metrics, and what it was."""

    run_id: str
    metrics: dict[str, float]
    description: str


_TRAINING = threading.Lock()
C_VALUES = (1.0, 0.02, 0.3, 3.0, 0.005)  # each run a different regularisation: visible diffs


def train(tracking_uri: str) -> TrainedRun:
    """Train the next churn classifier and log it, with its metrics, to MLflow."""
    import mlflow

    _quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(EXPERIMENT)
    number = len(mlflow.MlflowClient().search_runs([experiment.experiment_id])) + 1
    model, params, metrics = fit(number)
    # MLflow prints each run's URL on stdout; the demo prints its own one-line summary.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        mlflow.start_run(run_name=f"{MODEL}-{number}", tags=_git_tags()) as run,
    ):
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        # The evidence in the notice's thread shows it (docs/evidence.md).
        mlflow.log_figure(confusion_figure(model, number), "confusion_matrix.png")
    model_call = f"{params['model']}(C={params['C']:g})"
    description = f"Run {number}: {model_call} on {params['rows']} synthetic customers"
    return TrainedRun(run.info.run_id, metrics, description)


def fit(number: int) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """Fit run `number` on synthetic churn data; return the model, its params and metrics."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    # Same customers every time (no download); each run splits and regularises differently.
    features, churned = make_classification(
        n_samples=2000, n_features=8, n_informative=5, weights=[0.7], random_state=7
    )
    x_train, x_test, y_train, y_test = train_test_split(
        features, churned, test_size=0.25, random_state=number
    )
    c = C_VALUES[(number - 1) % len(C_VALUES)]
    model = LogisticRegression(C=c, max_iter=1000).fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "f1": float(f1_score(y_test, predicted)),
    }
    return model, {"model": "LogisticRegression", "C": c, "rows": len(x_train)}, metrics


def _holdout(number: int) -> tuple[Any, Any]:
    """Return run `number`'s test features and labels, as `fit` splits them."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    features, churned = make_classification(
        n_samples=2000, n_features=8, n_informative=5, weights=[0.7], random_state=7
    )
    _, x_test, _, y_test = train_test_split(features, churned, test_size=0.25, random_state=number)
    return x_test, y_test


def confusion_figure(model: Any, number: int) -> Any:
    """Draw the confusion matrix of run `number` on its test split (matplotlib, no display)."""
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    x_test, y_test = _holdout(number)
    counts = confusion_matrix(y_test, model.predict(x_test))
    fig = Figure(figsize=(3.2, 3.0), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    for (row, col), count in np.ndenumerate(counts):
        dark = count > counts.max() / 2
        ax.text(col, row, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="churned")
    ax.set_title(f"Confusion matrix, run {number}")
    fig.tight_layout()
    return fig


def send_event(config: DemoConfig, run: TrainedRun) -> str:
    """Send the signed training event for `run` as the requester; return the event id."""
    from registry.rules.events import TrainingEvent
    from webhooks.notify import send

    event = TrainingEvent(
        model_name=MODEL,
        run_id=run.run_id,
        requested_by=REQUESTER,
        metrics=run.metrics,
        description=run.description,
    )
    answer = send(config.url("webhooks"), TRAINING_SECRET, event, retries=3, timeout=10)
    return str(answer.get("event_id", ""))


def train_and_send(config: DemoConfig) -> str:
    """Train, log and send one run; say what was sent."""
    return sandbox_train(config)["message"]


def sandbox_train(config: DemoConfig) -> dict[str, str]:
    """Train, log and send one run; return what was sent and the run's ID (for the page)."""
    with _TRAINING:  # the page's button and the first run must not interleave runs
        run = train(config.url("mlflow"))
        send_event(config, run)
    who = USERS[REQUESTER]["name"]
    shown = {name: format_number(value) for name, value in run.metrics.items()}
    sent = SENT.format(run=run.run_id[:12], model=MODEL, who=who, **shown)
    return {"message": sent, "run_id": run.run_id}


def promote_by_hand(config: DemoConfig) -> str:
    """Train a run, register it by hand and ask MLflow to make it Production (the sandbox's
    "Promote in MLflow by hand"); say what MLflow answered."""
    with _TRAINING:
        run = train(config.url("mlflow"))
    return gate_demo.promote_by_hand(config.url("mlflow"), MODEL, run.run_id)


# -- an alert, as Alertmanager sends one -------------------------------------------------------


def alert_payload(version: str, source: str) -> dict[str, Any]:
    """Return Alertmanager's webhook body with one firing alert for the demo model."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    labels = {"alertname": ALERT_NAME, "severity": "page", "model": MODEL}
    if version:
        labels["version"] = version
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": f"More than 5% of {MODEL} predictions fail",
            "description": "registry_bot_prediction_errors_total over the last 5 minutes",
        },
        "startsAt": now,
        "endsAt": "0001-01-01T00:00:00Z",  # Go's zero time: still firing
        "generatorURL": source,
        "fingerprint": uuid.uuid4().hex[:16],  # each click is a new alert
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERT_NAME}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "registry-bot",
        "groupLabels": {"alertname": ALERT_NAME},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [alert],
    }


def fire_alert(config: DemoConfig) -> str:
    """Post an alert for the served version to /hooks/alertmanager; say what was answered."""
    import requests

    version = _served_version(config)
    body = alert_payload(version, f"{config.url('predict')}/metrics")
    resp = requests.post(
        f"{config.url('webhooks')}/hooks/alertmanager",
        json=body,
        headers={"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"},
        timeout=10,
    )
    resp.raise_for_status()
    handled = int(resp.json().get("handled", 0))
    shown = {"alert": ALERT_NAME, "model": MODEL, "version": f" v{version}" if version else ""}
    return (FIRED if handled else FIRED_UNHANDLED).format(handled=handled, **shown)


def _served_version(config: DemoConfig) -> str:
    """Return the version the prediction API serves, or '' (the alert then names none)."""
    import requests

    try:
        return str(
            requests.get(f"{config.url('predict')}/version", timeout=2).json()["version"] or ""
        )
    except (requests.RequestException, ValueError, KeyError):
        return ""


def _git_tags() -> dict[str, str]:
    """Tag the run with this checkout's commit, as MLflow does for runs started from git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit} if len(commit) == 40 else {}


def _quiet_mlflow() -> None:
    # MLflow logs hints (no signature, no input example) that are no news in a demo.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", module="mlflow")


# -- the whole demo --------------------------------------------------------------------------


def start(config: DemoConfig, procs: Processes) -> SandboxServer:
    """Start every piece in dependency order; return the sandbox."""
    sandbox = start_sandbox(config, lambda: sandbox_train(config), lambda: fire_alert(config))
    sandbox.server.app.config["on_promote"] = lambda: promote_by_hand(config)  # type: ignore[attr-defined]
    env = demo_env(config, demo_redis(config, procs))
    # The sandbox answers auth.test, which the bot calls at start, so it goes first.
    started = {
        name: start_service(config, procs, name, args, env) for name, args in SERVICES.items()
    }
    start_mlflow(config, procs, env)  # meanwhile the services import and connect
    if config.socket_mode:
        print(SOCKET_MODE, flush=True)
    print(WAITING.format(names=", ".join(started)), flush=True)
    for name, proc in started.items():
        wait_ready(config, name, proc, readiness(config, name, sandbox.double))
    print(TRAINING, flush=True)
    print(train_and_send(config), flush=True)
    print(WAITING_NOTICE, flush=True)
    wait_for_notice(config, sandbox.double)
    start_prediction_api(config, procs, env)
    return sandbox


def run(config: DemoConfig) -> int:
    """Run the demo until SIGINT or SIGTERM, then stop everything it started."""
    began = time.monotonic()
    check_ports(config)
    prepare_dir(config.root)
    print(STARTING.format(root=_shown(config.root)), flush=True)
    procs, sandbox = Processes(), None
    _on_signals(_raise_stop)
    try:
        sandbox = start(config, procs)
        print(
            READY.format(
                sandbox=config.url("sandbox"),
                mlflow=config.url("mlflow"),
                predict=config.url("predict") + "/version",
                model=MODEL,
                logs=_shown(config.logs),
                ports=", ".join(f"{name} {port}" for name, port in config.ports.items()),
                seconds=time.monotonic() - began,
            ),
            flush=True,
        )
        while True:
            signal.pause()
    except Stop:
        return 0
    finally:
        _on_signals(signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        print(STOPPING, flush=True)
        if sandbox is not None:
            sandbox.stop()
        procs.stop()
        print(STOPPED, flush=True)


def send_another(config: DemoConfig) -> int:
    """Train and send one more run to a running demo (`make demo-event`)."""
    if not stack.url_answers(f"{config.url('webhooks')}/healthz"):
        raise DemoError(NO_DEMO.format(url=config.url("webhooks")))
    print(train_and_send(config), flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Run the demo, or with `event` send one more training run to a running one."""
    try:
        config = DemoConfig.from_env()
        if argv[:1] == ["event"]:
            return send_another(config)
        return run(config)
    except DemoError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1


def _on_signals(handler: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _last_line(path: Path) -> str:
    lines = _read(path).decode(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else "(no output)"


def _shown(path: Path) -> str:
    """Show a path relative to the working directory when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
