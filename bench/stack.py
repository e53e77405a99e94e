"""The real stack for the bench: an MLflow server, the Slack double, services as processes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import redis

import devkit.stack
from devkit.slack_double import SlackDouble

if TYPE_CHECKING:
    from mlflow import MlflowClient

REPO = Path(__file__).resolve().parent.parent
TOKEN = "xoxb-bench-token"
SIGNING_SECRET = "bench-signing-secret"
CHANNEL = "CNOTICES"
TEAM = "T0TEST"
TRAINING_SECRET = "whsec_" + "YmVuY2gtdHJhaW5pbmctc2VjcmV0LTMyLWJ5dGVzISE="
CLICKERS = tuple(f"UCLICK{i:02d}" for i in range(20))
USERS = {
    "UREQUESTER": {"name": "rita", "email": "rita@example.com"},
    **{u: {"name": f"clicker{i}", "email": f"c{i}@example.com"} for i, u in enumerate(CLICKERS)},
}
WORKER_DB, FRONT_DB = 13, 14  # the pipeline's database, and one nobody consumes
QUEUE = "registry-bot"  # the Celery queue (REGISTRY_BOT_QUEUE), a Redis list
READY_TIMEOUT = 60.0


@dataclass
class Service:
    """One running service: its process, log and how long it took to be ready."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    url: str = ""
    start_seconds: float = 0.0

    def pids(self) -> list[int]:
        """Return the service's processes: the main one first, then its children."""
        return [self.proc.pid, *devkit.stack.descendants(self.proc.pid)]

    def log(self) -> str:
        """Return the service's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Bench:
    """The pieces every scenario shares: a temp dir, MLflow, the Slack double and Redis."""

    workdir: Path
    redis_base: str = ""
    mlflow_url: str = ""
    mlflow_start_seconds: float = 0.0
    slack: SlackDouble = field(default_factory=lambda: SlackDouble(token=TOKEN, users=USERS))
    procs: list[subprocess.Popen] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # for every service, e.g. POLICY_FILE

    @cached_property
    def client(self) -> MlflowClient:
        """Return the bench's own MlflowClient on the server."""
        from bench.floor import client_for

        return client_for(self.mlflow_url)

    @classmethod
    def open(cls) -> Bench:
        """Start a Redis of its own, the MLflow server and the Slack double.

        Never a Redis that already answers: the bench flushes its databases, and another
        bench or test run on the same server would take its queued tasks.
        """
        bench = cls(Path(tempfile.mkdtemp(prefix="registry-bot-bench-")))
        redis_port = devkit.stack.free_port()
        bench.procs.append(devkit.stack.start_redis(redis_port, bench.workdir / "redis"))
        bench.redis_base = f"redis://127.0.0.1:{redis_port}"
        started = time.perf_counter()
        port = devkit.stack.free_port()
        server = devkit.stack.start_mlflow_server(port, bench.workdir / "mlflow")
        bench.procs.append(server)
        bench.mlflow_start_seconds = time.perf_counter() - started
        bench.mlflow_url = f"http://127.0.0.1:{port}"
        bench.slack.start()
        bench.flush()
        return bench

    def redis(self, db: int) -> redis.Redis:
        """Return a client on one of the bench's Redis databases."""
        return redis.Redis.from_url(f"{self.redis_base}/{db}")

    def flush(self) -> None:
        """Empty the bench's Redis databases."""
        for db in (WORKER_DB, FRONT_DB):
            self.redis(db).flushdb()

    def env(self, db: int, port: int = 0) -> dict[str, str]:
        """Return a service environment, as the test suite's StackFactory builds it."""
        env = devkit.stack.service_env(
            MLFLOW_TRACKING_URI=self.mlflow_url,
            REDIS_URL=f"{self.redis_base}/{db}",
            SLACK_API_URL=self.slack.api_url,
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_CHANNEL=CHANNEL,
            APPROVERS=",".join(CLICKERS),
            REGISTRY_BOT_QUEUE=QUEUE,
            TRAINING_WEBHOOK_SECRET=TRAINING_SECRET,
            MLFLOW_WEBHOOK_SECRET="bench-mlflow-secret",
            WEBHOOKS_PORT=str(port or devkit.stack.free_port()),
            BOT_PORT=str(port or devkit.stack.free_port()),
            **self.extra_env,
        )
        return env

    def gunicorn(self, name: str, target: str, db: int, extra: Sequence[str] = ()) -> Service:
        """Serve a WSGI app factory under `gunicorn -w 2` and wait until /healthz answers."""
        port = devkit.stack.free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["-m", "gunicorn", "-w", "2", *extra, "-b", f"127.0.0.1:{port}", target]
        ready = lambda svc: devkit.stack.url_answers(f"{url}/healthz")  # noqa: E731
        return self.spawn(name, args, db, ready, url=url)

    def worker(
        self, concurrency: int, *, wrap: Sequence[str] = (), name: str = "", group: bool = False
    ) -> Service:
        """Start `python -m worker --concurrency N` and wait until Celery says ready.

        With `group`, the worker leads a process group of its own, so that it can be killed
        whole (main process and pool at once), as a lost machine would lose it.
        """
        args = ["-m", "worker", "--concurrency", str(concurrency)]
        name = name or f"worker-c{concurrency}"
        ready = lambda svc: " ready." in svc.log()  # noqa: E731
        return self.spawn(name, args, WORKER_DB, ready, wrap=wrap, group=group)

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        db: int,
        ready: Callable[[Service], bool],
        *,
        url: str = "",
        wrap: Sequence[str] = (),
        group: bool = False,
    ) -> Service:
        """Start `python <args>` (optionally under `wrap`) and time it until `ready`."""
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [*wrap, sys.executable, *args],
                env=self.env(db),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0 if group else None,
            )
        self.procs.append(proc)  # so close() stops it even if the run fails half way
        service = Service(name, proc, log_path, url)
        devkit.stack.wait_until(
            lambda: _alive(service) and ready(service), READY_TIMEOUT, name, interval=0.01
        )
        service.start_seconds = time.perf_counter() - started
        return service

    def close(self) -> None:
        """Stop the double and every process the bench started; flush Redis; remove the temp dir."""
        self.slack.stop()
        for proc in reversed(self.procs):
            devkit.stack.stop(proc)
        # A Redis the bench started itself was just stopped, and its data went with it.
        with contextlib.suppress(redis.RedisError):
            self.flush()
        shutil.rmtree(self.workdir, ignore_errors=True)


def stop(service: Service | None) -> None:
    """Stop a service's main process (its children follow) and reap it."""
    if service is not None:
        devkit.stack.stop(service.proc, timeout=20)


def _alive(service: Service) -> bool:
    if service.proc.poll() is not None:
        raise RuntimeError(
            f"{service.name} exited {service.proc.returncode}: {service.log()[-2000:]}"
        )
    return True


def memory_kb(pid: int, field_name: str = "VmRSS") -> int:
    """Return VmRSS (from status) or Pss (from smaps_rollup) of a process, in kB."""
    path = "status" if field_name.startswith("Vm") else "smaps_rollup"
    try:
        text = Path(f"/proc/{pid}/{path}").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def python_probe(bench: Bench, args: list[str]) -> subprocess.CompletedProcess:
    """Run `python <args>` with a service's environment; raise with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, *args],
        env=bench.env(FRONT_DB),
        cwd=bench.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe failed: {done.stderr[-1500:]}")
    return done
