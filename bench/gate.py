"""`python -m bench gate`: what the gate inside MLflow adds to each MLflow request.

One run starts two MLflow servers on one SQLite store, the same command but for
`--app-name registry-bot`, and sends each kind of request to both in turn (plain, gated,
plain, …), one at a time from one client, so drift on a shared machine falls on both
alike. The kinds: a read the gate does not watch, a person's watched write it lets through
(a tag), one it must look up the version's stage for (a move to Staging), registry-bot's
own write (the token), and a refused move into Production filed on Redis (gated only: the
plain server would carry it out). Reported: p50 and p99 of each, and the gated minus the
plain.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import requests

from bench.report import Figure, pct, table, write
from bench.scenarios import say
from bench.stack import REPO
from devkit.stack import free_port, start_mlflow_server, start_redis, stop
from gate.rules import HEADER

TOKEN = "bench-gate-token-0123456789abcdef"
MODEL = "bench-gated"
POLICY = f"defaults:\n  protect_production: alert\nmodels:\n  {MODEL}:\n    channel: CBENCH\n"
API = "/api/2.0/mlflow"


METHOD = (
    "Two MLflow servers (uvicorn, one worker each) on one SQLite store, the same command but "
    "for `--app-name registry-bot`, on one machine ({cpus} cores) shared with others. One "
    "client sends each kind of request {n} times to each server, alternating (and which goes "
    "first alternating too), one at a time, after a warm-up; latency is measured at the "
    "client. The gate's added latency is the gated server's percentile minus the plain "
    "one's: at p99 that difference is mostly the machine's noise (an unwatched read costs the "
    "gate one dictionary lookup). The refused move into Production runs on the gated server "
    "alone (the plain one would carry it out) and includes filing it on Redis."
)


@dataclass(frozen=True)
class GatePlan:
    """How many requests of each kind go to each server."""

    requests: int = 600
    warmup: int = 30


QUICK_GATE = GatePlan(requests=40, warmup=5)


def run_gate(quick: bool) -> int:
    """Measure the gate's added latency; write and print the results."""
    plan, suffix = (QUICK_GATE, "-gate-quick") if quick else (GatePlan(), "-gate")
    started, day = time.monotonic(), date.today().isoformat()
    data = measure(plan)
    data |= {"plan": asdict(plan), "day": day, "cpus": os.cpu_count()}
    data["bench_seconds"] = round(time.monotonic() - started)
    figures = gate_figures(data["kinds"], data["refused"])
    paths = write(
        day, suffix, data, figures, [METHOD.format(n=plan.requests, cpus=os.cpu_count())], []
    )
    print(table(figures))
    say(
        f"done in {data['bench_seconds']} s; wrote "
        + ", ".join(str(p.relative_to(REPO)) for p in paths)
    )
    return 0


def measure(plan: GatePlan) -> dict:
    """Start Redis and both servers, make the model, time every kind on both."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    (workdir / "policy.yaml").write_text(POLICY)
    redis_port = free_port()
    procs = [start_redis(redis_port, workdir / "redis")]
    try:
        plain, gated = _servers(workdir, redis_port, procs)
        _make_model(gated)
        kinds = {name: _time_kind(plain, gated, send, plan) for name, send in KINDS.items()}
        say("refused moves into Production, filed on Redis (gated only)")
        refused = _timed(gated, _refused, plan)
        return {"kinds": kinds, "refused": refused}
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _servers(workdir: Path, redis_port: int, procs: list) -> tuple[str, str]:
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {
        "MLFLOW_GATE_TOKEN": TOKEN,
        "POLICY_FILE": str(workdir / "policy.yaml"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    urls = []
    for name, extra in (("plain", []), ("gated", ["--app-name", "registry-bot"])):
        port = free_port()
        say(f"starting the {name} MLflow server")
        procs.append(
            start_mlflow_server(
                port, workdir / name, env=env, backend_store_uri=store, extra_args=extra
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    return urls[0], urls[1]


def _make_model(url: str) -> None:
    """As registry-bot: the model with v1 in Production and v2 to move about."""
    bot = {HEADER: TOKEN}
    _post(url, "/registered-models/create", {"name": MODEL}, bot)
    for _ in range(2):
        _post(url, "/model-versions/create", {"name": MODEL, "source": "s3://bench/m"}, bot)
    body = {"name": MODEL, "version": "1", "stage": "Production"}
    _post(url, "/model-versions/transition-stage", body, bot)


def _post(url: str, path: str, body: dict, headers: dict | None = None) -> requests.Response:
    resp = requests.post(f"{url}{API}{path}", json=body, headers=headers or {}, timeout=30)
    resp.raise_for_status()
    return resp


Send = Callable[[requests.Session, str], requests.Response]
KINDS: dict[str, Send] = {
    "read (not watched)": lambda s, url: s.get(
        f"{url}{API}/registered-models/get", params={"name": MODEL}, timeout=30
    ),
    "person's tag write (watched, passes)": lambda s, url: s.post(
        f"{url}{API}/model-versions/set-tag",
        json={"name": MODEL, "version": "2", "key": "team", "value": "bench"},
        timeout=30,
    ),
    "person's move to Staging (watched, stage looked up)": lambda s, url: s.post(
        f"{url}{API}/model-versions/transition-stage",
        json={"name": MODEL, "version": "2", "stage": "Staging"},
        timeout=30,
    ),
    "registry-bot's tag write (token)": lambda s, url: s.post(
        f"{url}{API}/model-versions/set-tag",
        json={"name": MODEL, "version": "2", "key": "registry_bot.bench", "value": "1"},
        headers={HEADER: TOKEN},
        timeout=30,
    ),
}


def _refused(session: requests.Session, url: str) -> requests.Response:
    body = {"name": MODEL, "version": "2", "stage": "Production"}
    resp = session.post(f"{url}{API}/model-versions/transition-stage", json=body, timeout=30)
    assert resp.status_code == 403, resp.text
    return resp


def _time_kind(plain: str, gated: str, send: Send, plan: GatePlan) -> dict:
    """Time one kind on both servers, alternating; return each one's latencies in ms."""
    session = requests.Session()
    times: dict[str, list[float]] = {"plain": [], "gated": []}
    servers = [("plain", plain), ("gated", gated)]
    for i in range(plan.warmup + plan.requests):
        for name, url in servers if i % 2 else servers[::-1]:  # each goes first every other time
            begun = time.perf_counter()
            resp = send(session, url)
            took = (time.perf_counter() - begun) * 1000
            assert resp.ok, resp.text
            if i >= plan.warmup:
                times[name].append(took)
    return times


def _timed(url: str, send: Send, plan: GatePlan) -> list[float]:
    session = requests.Session()
    times = []
    for i in range(plan.warmup + plan.requests):
        begun = time.perf_counter()
        send(session, url)
        if i >= plan.warmup:
            times.append((time.perf_counter() - begun) * 1000)
    return times


def gate_figures(kinds: dict[str, dict[str, list[float]]], refused: list[float]) -> list[Figure]:
    """p50 / p99 without and with the gate, and what the gate adds, per kind."""
    figures = []
    for kind, times in kinds.items():
        plain, gated = times["plain"], times["gated"]
        p50 = (pct(plain, 50), pct(gated, 50))
        p99 = (pct(plain, 99), pct(gated, 99))
        figures += [
            Figure(kind, "p50 without / with the gate", f"{p50[0]:.2f} / {p50[1]:.2f} ms"),
            Figure(kind, "p99 without / with the gate", f"{p99[0]:.2f} / {p99[1]:.2f} ms"),
            Figure(
                kind,
                "added by the gate, p50 / p99",
                f"{p50[1] - p50[0]:+.2f} / {p99[1] - p99[0]:+.2f} ms",
            ),
        ]
    shown = f"{pct(refused, 50):.2f} / {pct(refused, 99):.2f} ms"
    figures.append(Figure("refused move into Production", "p50 / p99, filed on Redis", shown))
    return figures
