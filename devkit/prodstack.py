"""The production shape without Docker: PostgreSQL, an MLflow server on it, and each service
run with the command and settings docker-compose.yml gives it (a test keeps them the same)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devkit.postgres import Postgres, start_postgres
from devkit.slack_double import SlackDouble
from devkit.stack import (
    WEBHOOK_ENV,
    alive,
    descendants,
    free_port,
    redis_answers,
    redis_server_binary,
    service_env,
    stop,
    url_answers,
    wait_until,
)

DRIVERS = ("psycopg2", "psycopg")  # SQLAlchemy's names: psycopg2, and psycopg 3
# The compose file's postgres service: user, password and database.
DATABASE = {"user": "mlflow", "password": "mlflow", "database": "mlflow"}
MLFLOW_SERVER_WORKERS = 2
SERVER_WORKERS = 2  # gunicorn workers of webhooks and of bot
GUNICORN_CONFIG = "python:registry.process.gunicorn_conf"  # the doors' JSON logs under gunicorn
# Each copy of the worker service runs one task at a time; scale out by running copies.
# An explicit count, as a container's CPU count is its host's, not its share.
WORKER_CONCURRENCY = 1
WORKER_COPIES = 2
ALLOWED_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*"
READY_TIMEOUT = 120.0
# What each app service is told of the others, as compose's x-app-environment (and, per
# service, the host it binds).
APP_ADDRESSES = ("MLFLOW_TRACKING_URI", "REDIS_URL", "WEBHOOKS_URL")
BIND_SETTING = {"webhooks": "WEBHOOKS_HOST", "bot": "BOT_HOST", "worker": "WORKER_METRICS_HOST"}
# What compose tells the MLflow server for its gate, from .env (REDIS_URL: the stack's).
GATE_SETTINGS = (
    "MLFLOW_GATE_TOKEN",
    "REDIS_URL",
    "POLICY_FILE",
    "PRODUCTION_ALIAS",
    "SLACK_CHANNEL",
    "REGISTRY_BOT_QUEUE",
)
METRICS_PORT = "9100"  # compose's WORKER_METRICS_PORT; each copy here gets a free one instead


@dataclass(frozen=True)
class Addresses:
    """Where the services listen and what MLflow stores in: all that differs from compose."""

    bind: str
    mlflow_port: int
    webhooks_port: int
    bot_port: int
    backend_store_uri: str
    artifacts: str
    redis_password: str  # every client authenticates, as in compose


def commands(at: Addresses) -> dict[str, list[str]]:
    """Return each compose service's command, as docker-compose.yml gives it, for `at`."""
    return {
        "redis": [
            *("redis-server", "--appendonly", "yes", "--maxmemory-policy", "noeviction"),
            *("--requirepass", at.redis_password),
        ],
        "mlflow": [
            *("mlflow", "server", "--host", at.bind, "--port", str(at.mlflow_port)),
            *("--backend-store-uri", at.backend_store_uri),
            *("--artifacts-destination", at.artifacts, "--serve-artifacts"),
            *("--workers", str(MLFLOW_SERVER_WORKERS)),
            *("--app-name", "registry-bot"),  # behind the gate (SPEC 14)
        ],
        "webhooks": _gunicorn(at.bind, at.webhooks_port, "webhooks:create_app()"),
        "worker": ["python", "-m", "worker", "--concurrency", str(WORKER_CONCURRENCY)],
        "scheduler": ["python", "-m", "worker", "beat"],
        "bot": _gunicorn(at.bind, at.bot_port, "bot:create_wsgi_app()"),
    }


def _gunicorn(bind: str, port: int, target: str) -> list[str]:
    return [
        *("gunicorn", "--config", GUNICORN_CONFIG, "--bind", f"{bind}:{port}"),
        *("--workers", str(SERVER_WORKERS), target),
    ]


def mlflow_environment(
    encryption_key: str, gate: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the MLflow server's settings: compose's, for a server on this machine; `gate`
    gives the gate's (the settings compose passes it from .env, and the Redis URL)."""
    return {
        **WEBHOOK_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": encryption_key,
        "MLFLOW_SERVER_ALLOWED_HOSTS": ALLOWED_HOSTS,
        **{name: (gate or {}).get(name, "") for name in GATE_SETTINGS},
    }


def app_environment(service: str, urls: Mapping[str, str], bind: str) -> dict[str, str]:
    """Return what an app service is told of the others (and where it binds), as in compose."""
    env = {name: urls[name] for name in APP_ADDRESSES}
    if service in BIND_SETTING:
        env[BIND_SETTING[service]] = bind
    if service == "worker":
        env["WORKER_METRICS_PORT"] = METRICS_PORT
    return env


def program(argv: list[str]) -> list[str]:
    """Return `argv` with its program resolved on this machine (this interpreter's tools)."""
    head, rest = argv[0], argv[1:]
    resolved = {
        "python": [sys.executable],
        "gunicorn": [sys.executable, "-m", "gunicorn"],
        "mlflow": [sys.executable, "-m", "mlflow"],
        "redis-server": [redis_server_binary()],
    }
    return [*resolved[head], *rest]


@dataclass
class ProdStack:
    """PostgreSQL, Redis, MLflow, webhooks, bot, N workers, beat and the Slack double, running."""

    driver: str
    settings: dict[str, str]  # what compose's .env gives every app service
    slack: SlackDouble
    workers: int = WORKER_COPIES
    mlflow_settings: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prodstack-")))
    postgres: Postgres | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    at: Addresses | None = None
    redis_port: int = 0
    commands: dict[str, list[str]] = field(default_factory=dict)

    @property
    def mlflow_url(self) -> str:
        return self._url(self._at.mlflow_port)

    @property
    def webhooks_url(self) -> str:
        return self._url(self._at.webhooks_port)

    @property
    def bot_url(self) -> str:
        return self._url(self._at.bot_port)

    @property
    def redis_url(self) -> str:
        return f"redis://:{self._at.redis_password}@127.0.0.1:{self.redis_port}/0"

    @property
    def _at(self) -> Addresses:
        assert self.at is not None, "the stack is not started"
        return self.at

    def _url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def start(self) -> ProdStack:
        """Start everything and wait until each service answers; stop all if one fails."""
        try:
            self._start_stores()
            self._start_apps()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_stores(self) -> None:
        """PostgreSQL, Redis (with compose's persistence settings), then MLflow on PostgreSQL."""
        from cryptography.fernet import Fernet

        self.slack.start()
        self.postgres = start_postgres(**DATABASE)
        self.redis_port = free_port()
        self.at = Addresses(
            bind="127.0.0.1",
            mlflow_port=free_port(),
            webhooks_port=free_port(),
            bot_port=free_port(),
            backend_store_uri=self.postgres.url(self.driver),
            artifacts=str(self.workdir / "mlartifacts"),
            redis_password=secrets.token_hex(16),
        )
        self.commands = commands(self.at)
        local = ["--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        self._spawn("redis", [*self.commands["redis"], *local], service_env())
        # The gate and every service share one token, as compose's .env gives it.
        self.settings = {"MLFLOW_GATE_TOKEN": secrets.token_hex(24), **self.settings}
        gate = {**self.settings, "REDIS_URL": self.redis_url}
        mlflow_env = mlflow_environment(Fernet.generate_key().decode(), gate) | self.mlflow_settings
        self._spawn("mlflow", self.commands["mlflow"], service_env(**mlflow_env))
        self._wait_ready(["redis", "mlflow"])

    def _start_apps(self) -> None:
        """Start webhooks, bot, the workers and beat at once, then wait for all of them."""
        for service in ("webhooks", "bot", "scheduler"):
            self._spawn(service, self.commands[service], self.app_env(service))
        self.scale_workers(self.workers, wait=False)
        self._wait_ready(list(self.procs))

    def app_env(self, service: str) -> dict[str, str]:
        """Return an app service's environment: the shared settings and the addresses."""
        urls = {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "REDIS_URL": self.redis_url,
            "WEBHOOKS_URL": self.webhooks_url,
        }
        local = {"SLACK_API_URL": self.slack.api_url, **self.settings}
        return service_env(**local, **app_environment(service, urls, self._at.bind))

    def worker_names(self) -> list[str]:
        """Return the running worker copies' names, in the order they were started."""
        return sorted((n for n in self.procs if n.startswith("worker-")), key=_copy_number)

    def scale_workers(self, count: int, *, wait: bool = True) -> None:
        """Run exactly `count` copies of the worker service."""
        names = self.worker_names()
        for name in names[count:]:
            self._stop(name)
        for i in range(len(names) + 1, count + 1):
            env = {**self.app_env("worker"), "WORKER_METRICS_PORT": str(free_port())}
            self._spawn(f"worker-{i}", self.commands["worker"], env)
        if wait:
            self._wait_ready(self.worker_names())
        self.workers = count

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_path(name), "ab") as log:
            self.procs[name] = subprocess.Popen(
                program(argv), env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )

    def _wait_ready(self, names: list[str]) -> None:
        for name in names:
            check = self._readiness(name)
            wait_until(lambda n=name, c=check: self._alive(n) and c(), READY_TIMEOUT, name, 0.05)

    def _readiness(self, name: str) -> Callable[[], bool]:
        service = name.split("-")[0]
        return {
            "redis": lambda: redis_answers(self.redis_url),
            "mlflow": lambda: url_answers(f"{self.mlflow_url}/health", status=200),
            "webhooks": lambda: url_answers(f"{self.webhooks_url}/healthz", status=200),
            "bot": lambda: url_answers(f"{self.bot_url}/healthz", status=200),
            "worker": lambda: " ready." in self.log(name),
            "scheduler": lambda: "beat: Starting" in self.log(name),
        }[service]

    def _alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}: {self.log(name)[-2000:]}")
        return True

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        """Return what a service has logged so far."""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self, name: str) -> list[int]:
        """Return a service's processes: the one started and everything below it."""
        if name == "postgres":
            pids = self.postgres.pids() if self.postgres else []
        else:
            pids = [self.procs[name].pid]
        return [*pids, *(child for pid in pids for child in descendants(pid))]

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        below = descendants(proc.pid)
        stop(proc, timeout=20)
        _end(below)

    def stop(self) -> None:
        """Stop every service (apps first, stores last), the double, and remove the files."""
        apps = [n for n in self.procs if n not in ("mlflow", "redis")]
        below = {n: descendants(self.procs[n].pid) for n in self.procs}
        for name in apps:
            self.procs[name].terminate()  # all at once: a warm shutdown each takes seconds
        for name in [*apps, "mlflow", "redis"]:
            if name in self.procs:
                stop(self.procs.pop(name), timeout=20)
                _end(below[name])
        if self.postgres is not None:
            self.postgres.stop()
        self.slack.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _copy_number(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _end(pids: list[int]) -> None:
    """Kill what a stopped service left behind (for example an MLflow server's workers)."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
