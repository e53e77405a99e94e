"""A throwaway PostgreSQL server for the local production shape: its own data directory, a
free port, the credentials docker-compose.yml gives its postgres service."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devkit.stack import free_port, wait_until

# Running as root (CI, containers) the server must run as someone else: it refuses root.
UNPRIVILEGED_USER = "nobody"
READY_TIMEOUT = 60.0


def binaries() -> Path:
    """Find PostgreSQL's server programs: those the `pgserver` package bundles, else on PATH."""
    # Found, not imported: importing pgserver does work of its own (and warns) at import time.
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("no PostgreSQL found: `pip install -e '.[test]'` (pgserver) or install it")


def database_url(driver: str, user: str, password: str, host: str, port: int, db: str) -> str:
    """Return a SQLAlchemy URL that names its driver (a bare postgresql:// is psycopg 3)."""
    return f"postgresql+{driver}://{user}:{password}@{host}:{port}/{db}"


@dataclass
class Postgres:
    """One running server: where it listens and how to stop it."""

    user: str
    password: str
    database: str
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    bindir: Path = field(default_factory=lambda: binaries())
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "postgres.log"

    def url(self, driver: str) -> str:
        """Return the SQLAlchemy URL of the database through `driver` (psycopg2 or psycopg)."""
        return database_url(driver, self.user, self.password, "127.0.0.1", self.port, self.database)

    def pids(self) -> list[int]:
        """Return the server's main process id (its backends are its children)."""
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back and disconnect clients), then remove the files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown, backends too
                self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres(*, user: str, password: str, database: str) -> Postgres:
    """Initialise a cluster in a fresh temp dir, serve it on a free port, create `database`."""
    # Its own temp dir, not the caller's: the server's user must be able to reach it.
    server = Postgres(user, password, database, free_port(), Path(tempfile.mkdtemp(prefix="pg-")))
    owner = _owner()
    if owner:
        shutil.chown(server.workdir, owner)
        server.bindir = _reachable_copy(server.bindir, server.workdir)
    data = server.workdir / "data"
    _initdb(server, data, owner)
    _serve(server, data, owner)
    _run(server, "createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", user, database)
    return server


def _reachable_copy(bindir: Path, workdir: Path) -> Path:
    """Copy pgserver's programs, libraries and share files where the server's user can read
    them: the virtual environment may sit under a directory only root can enter (/root)."""
    install = bindir.parent
    if install.name != "pginstall":
        return bindir  # a system install: readable by everyone already
    site = install.parent.parent
    copy = workdir / "pg" / install.parent.name / install.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / part, symlinks=True)
    # auditwheel put the shared libraries beside the package: the programs' RPATH says
    # $ORIGIN/../../../pgserver.libs, so they keep that place relative to bin/.
    libs = site / f"{install.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, workdir / "pg" / libs.name, symlinks=True)
    return copy / "bin"


def _owner() -> str | None:
    return UNPRIVILEGED_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _initdb(server: Postgres, data: Path, owner: str | None) -> None:
    pwfile = server.workdir / "pwfile"
    pwfile.write_text(server.password + "\n")
    if owner:
        shutil.chown(pwfile, owner)
    args = ["-D", str(data), "-U", server.user, f"--pwfile={pwfile}"]
    args += ["--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync"]
    _run(server, "initdb", *args, owner=owner)
    pwfile.unlink()


def _serve(server: Postgres, data: Path, owner: str | None) -> None:
    args = ["-D", str(data), "-p", str(server.port), "-h", "127.0.0.1", "-k", str(server.workdir)]
    with open(server.log_path, "ab") as log:  # the server keeps its own copy of the handle
        server.proc = subprocess.Popen(
            [str(server.bindir / "postgres"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=owner,
        )
    wait_until(lambda: _ready(server), READY_TIMEOUT, f"postgres on {server.port}", 0.2)


def _ready(server: Postgres) -> bool:
    if server.proc is not None and server.proc.poll() is not None:
        said = server.log_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"postgres exited: {said}")
    probe = [str(server.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(server.port)]
    return subprocess.run(probe, check=False).returncode == 0


def _run(server: Postgres, program: str, *args: str, owner: str | None = None) -> None:
    env = {**os.environ, "PGPASSWORD": server.password}
    done = subprocess.run(
        [str(server.bindir / program), *args],
        env=env,
        capture_output=True,
        text=True,
        user=owner,
        cwd=server.workdir,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{program} failed: {done.stderr.strip()[-1500:]}")
