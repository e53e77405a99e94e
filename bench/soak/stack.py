"""The soak's stack: a durable Redis, an MLflow server and the services, each restartable."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

import devkit.stack
from bench.stack import CHANNEL, CLICKERS, SIGNING_SECRET, TOKEN, TRAINING_SECRET
from devkit.slack_double import SlackDouble

QUEUE = "registry-bot"
READY_TIMEOUT = 90.0
REQUESTER = "UREQUESTER"
OUTSIDER = "UOUTSIDER"
USERS = {
    REQUESTER: {"name": "rita", "email": "rita@example.com"},
    OUTSIDER: {"name": "olaf", "email": "olaf@example.com"},
    **{u: {"name": f"clicker{i}", "email": f"c{i}@example.com"} for i, u in enumerate(CLICKERS)},
}
SERVICES = {
    "worker": ["-m", "worker", "--concurrency", "2"],
    "beat": ["-m", "worker", "beat"],
    "webhooks": ["-m", "webhooks"],
    "bot": ["-m", "bot"],
}


@dataclass
class Service:
    """One service process, started again under the same name after a kill."""

    name: str
    args: list[str]
    log_path: Path
    ready: Callable[[str], bool]
    proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        """Start it in a process group of its own; wait until it says it is ready."""
        since = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        devkit.stack.wait_until(
            lambda: self._alive() and self.ready(self.log(since)), READY_TIMEOUT, self.name, 0.05
        )

    def kill_group(self) -> int:
        """SIGKILL the process and every process in its group at once; return how many."""
        if self.proc is None:
            return 0
        pids = [self.proc.pid, *devkit.stack.descendants(self.proc.pid)]
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        devkit.stack.wait_until(
            lambda: not any(devkit.stack.alive(p) for p in pids), 10, f"{self.name} to die"
        )
        return len(pids)

    def stop(self) -> None:
        """Stop it gracefully (then kill it), with its whole group."""
        if self.proc is not None and self.proc.poll() is None:
            devkit.stack.stop(self.proc, timeout=20)
            with contextlib.suppress(ProcessLookupError):  # pool processes left behind
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def log(self, since: int = 0) -> str:
        """Return the service's log from byte `since` on."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited {code}: {self.log()[-2000:]}")
        return True


@dataclass
class SoakStack:
    """Redis with an append-only file, an MLflow server on SQLite, the services, the double."""

    workdir: Path
    redis_port: int = field(default_factory=devkit.stack.steady_port)  # restarted
    mlflow_port: int = field(default_factory=devkit.stack.steady_port)  # restarted
    webhooks_port: int = field(default_factory=devkit.stack.free_port)
    bot_port: int = field(default_factory=devkit.stack.free_port)
    slack: SlackDouble = field(default_factory=lambda: SlackDouble(token=TOKEN, users=USERS))
    services: dict[str, Service] = field(default_factory=dict)
    redis_proc: subprocess.Popen | None = None
    mlflow_proc: subprocess.Popen | None = None
    mlflow_key: str = ""
    sweep_interval: int = 60
    external_mlflow: str = ""  # an MLflow server someone else runs: used, never restarted
    policy: str = ""  # the services' POLICY_FILE, when there is one

    @classmethod
    def open(cls, sweep_interval: int, mlflow_url: str = "", policy: str = "") -> SoakStack:
        """Start everything (MLflow unless `mlflow_url` names a server) and wait for each."""
        from cryptography.fernet import Fernet

        workdir = Path(tempfile.mkdtemp(prefix="registry-bot-soak-"))
        stack = cls(workdir, sweep_interval=sweep_interval, external_mlflow=mlflow_url)
        if policy:
            stack.policy = str(workdir / "policy.yaml")
            Path(stack.policy).write_text(policy)
        stack.mlflow_key = Fernet.generate_key().decode()  # kept across MLflow restarts
        try:
            stack.start_redis()
            if not mlflow_url:
                stack.start_mlflow()
            stack.slack.start()
            for name, args in SERVICES.items():
                log = stack.workdir / f"{name}.log"
                stack.services[name] = Service(name, args, log, _ready(name))
                stack.start(name)
        except BaseException:
            stack.close(keep=True)  # whatever did start, stopped; its logs kept
            raise
        return stack

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def mlflow_url(self) -> str:
        return self.external_mlflow or f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def webhooks_url(self) -> str:
        return f"http://127.0.0.1:{self.webhooks_port}"

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.bot_port}"

    def redis(self) -> redis.Redis:
        """Return a client on the stack's Redis."""
        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=5)

    def env(self) -> dict[str, str]:
        """Return the environment every service runs with."""
        return devkit.stack.service_env(
            MLFLOW_TRACKING_URI=self.mlflow_url,
            REDIS_URL=self.redis_url,
            SLACK_API_URL=self.slack.api_url,
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_CHANNEL=CHANNEL,
            # The requester is an approver too, so their click on their own version is refused
            # by the worker (separation of duties), not at the door.
            APPROVERS=",".join([*CLICKERS, REQUESTER]),
            REGISTRY_BOT_QUEUE=QUEUE,
            TRAINING_WEBHOOK_SECRET=TRAINING_SECRET,
            WEBHOOKS_PORT=str(self.webhooks_port),
            BOT_PORT=str(self.bot_port),
            SWEEP_INTERVAL=str(self.sweep_interval),
            **({"POLICY_FILE": self.policy} if self.policy else {}),
        )

    def start(self, name: str) -> None:
        """Start (or start again) one service."""
        self.services[name].start(self.env(), self.workdir)

    def kill_worker(self) -> int:
        """SIGKILL the worker's whole process group; return how many processes died."""
        return self.services["worker"].kill_group()

    def start_redis(self) -> None:
        self.redis_proc = devkit.stack.start_redis(
            self.redis_port, self.workdir / "redis", durable=True
        )

    def restart_redis(self) -> None:
        """Stop Redis as an operator would (its append-only file keeps the data); start it."""
        devkit.stack.stop(self.redis_proc)
        self.start_redis()

    def start_mlflow(self) -> None:
        self.mlflow_proc = devkit.stack.start_mlflow_server(
            self.mlflow_port,
            self.workdir / "mlflow",
            env={"MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": self.mlflow_key},
        )

    def restart_mlflow(self) -> None:
        """Stop the MLflow server and start it again on the same port and database."""
        self.stop_mlflow()
        self.start_mlflow()

    def stop_mlflow(self) -> None:
        """Stop the MLflow server: every registry call fails until `start_mlflow`."""
        devkit.stack.stop(self.mlflow_proc, timeout=30)

    def close(self, keep: bool = False) -> None:
        """Stop every process and the double; remove the work directory unless `keep`."""
        for service in self.services.values():
            service.stop()
        devkit.stack.stop(self.mlflow_proc, timeout=30)
        devkit.stack.stop(self.redis_proc)
        if keep:
            self._dump_slack()
        self.slack.stop()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _dump_slack(self) -> None:
        """Write every call the double answered, one JSON line each, beside the logs."""
        with open(self.workdir / "slack-calls.jsonl", "w") as out:
            for call in self.slack.calls():
                line = {"at": call.at, "method": call.method, "status": call.status}
                line.update(path=call.path, params=call.params)
                out.write(json.dumps(line, default=str) + "\n")


def _ready(name: str) -> Callable[[str], bool]:
    """Return how to tell from a service's new log lines that it serves."""
    marker = {
        "worker": " ready.",
        "beat": "beat: Starting",
        "webhooks": "webhooks listening",
        "bot": "bot listening",
    }[name]
    return lambda log: marker in log
