"""Profiles for missed targets: calls per event, py-spy or cProfile stacks, import costs."""

from __future__ import annotations

import cProfile
import os
import pstats
import re
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import devkit.stack
from bench.footprint import repo_relative
from bench.load import Request
from bench.prelog import LoggedRun
from bench.stack import (
    CHANNEL,
    CLICKERS,
    FRONT_DB,
    REPO,
    SIGNING_SECRET,
    TOKEN,
    TRAINING_SECRET,
    Bench,
    python_probe,
)

if TYPE_CHECKING:
    from flask import Flask

    from registry.ports.services import Services
    from registry.rules.settings import Settings

TOP = 10


@dataclass
class Tally:
    """Outbound calls (MLflow REST and Slack Web API) made while it was open, by caller."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, caller)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    wall: float = 0.0
    events: int = 0

    def add(self, endpoint: str, caller: str, seconds: float) -> None:
        """Count one call."""
        self.calls[endpoint, caller] += 1
        self.seconds[endpoint, caller] = self.seconds.get((endpoint, caller), 0.0) + seconds

    def summary(self) -> dict:
        """Return calls and milliseconds per event, by endpoint and by caller, biggest first."""
        n = max(self.events, 1)
        return {
            "events": self.events,
            "wall_ms_per_event": round(self.wall * 1000 / n, 1),
            "calls_per_event": round(sum(self.calls.values()) / n, 1),
            "call_ms_per_event": round(sum(self.seconds.values()) * 1000 / n, 1),
            "by_endpoint": _rows(self.calls, self.seconds, n, lambda key: key[0]),
            "by_caller": _rows(self.calls, self.seconds, n, lambda key: f"{key[0]} ({key[1]})"),
        }


def _rows(
    calls: Counter[tuple[str, str]],
    seconds: dict[tuple[str, str], float],
    n: int,
    name: Callable[[tuple[str, str]], str],
) -> list[dict]:
    count: Counter[str] = Counter()
    spent: dict[str, float] = {}
    for key in calls:
        count[name(key)] += calls[key]
        spent[name(key)] = spent.get(name(key), 0.0) + seconds[key]
    return [
        {"call": k, "per_event": round(count[k] / n, 2), "ms_per_event": round(v * 1000 / n, 1)}
        for k, v in sorted(spent.items(), key=lambda item: -item[1])
    ]


@contextmanager
def tally_calls() -> Iterator[Tally]:
    """Count and time every MLflow REST request and Slack Web API call in this process."""
    from mlflow.utils import rest_utils
    from slack_sdk import WebClient

    tally, http_request, api_call = Tally(), rest_utils.http_request, WebClient.api_call

    def timed_request(*args: Any, **kwargs: Any) -> Any:
        started, caller = time.perf_counter(), product_caller()
        try:
            return http_request(*args, **kwargs)
        finally:
            endpoint = kwargs.get("endpoint") or args[1]
            method = kwargs.get("method") or args[2]
            name = f"mlflow {method} {endpoint.split('/mlflow/', 1)[-1]}"
            tally.add(name, caller, time.perf_counter() - started)

    def timed_api(self: WebClient, api_method: str, **kwargs: Any) -> Any:
        started, caller = time.perf_counter(), product_caller()
        try:
            return api_call(self, api_method, **kwargs)
        finally:
            tally.add(f"slack {api_method}", caller, time.perf_counter() - started)

    rest_utils.http_request = timed_request
    WebClient.api_call = timed_api  # type: ignore[method-assign, assignment]
    try:
        yield tally
    finally:
        rest_utils.http_request = http_request
        WebClient.api_call = api_call  # type: ignore[method-assign]


def product_caller(depth: int = 2) -> str:
    """Name the innermost public functions of the core (`registry/`) on the stack."""
    core, names = str(REPO / "registry"), list[str]()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and len(names) < depth:
        code = frame.f_code
        if code.co_filename.startswith(core) and not code.co_name.startswith("_"):
            names.append(code.co_qualname)
        frame = frame.f_back
    return " ← ".join(names) or "bench"


def worker_services(bench: Bench) -> Services:
    """Build the worker's Services in this process, as worker.tasks.services does."""
    from registry.process.connect import build_services
    from registry.rules.settings import Settings

    settings = Settings(
        mlflow_tracking_uri=bench.mlflow_url,
        slack_bot_token=TOKEN,
        slack_channel=CHANNEL,
        slack_api_url=bench.slack.api_url,
        approvers=CLICKERS,
    )
    return build_services(settings)


def tally_events(do_event: Callable[[LoggedRun], object], runs: list[LoggedRun]) -> dict:
    """Run `do_event` per run under a call tally; return the per-event summary."""
    with tally_calls() as tally:
        started = time.perf_counter()
        for run in runs:
            do_event(run)
        tally.wall, tally.events = time.perf_counter() - started, len(runs)
    return tally.summary()


def worker_event(svc: Services, model_name: str) -> Callable[[LoggedRun], object]:
    """Return a function doing one training event exactly as the worker task does."""
    from registry.flows.lifecycle import stage_training_event
    from registry.rules.events import TrainingEvent

    def do(run: LoggedRun) -> object:
        event = TrainingEvent(model_name=model_name, run_id=run.run_id, requested_by="UREQUESTER")
        return stage_training_event(svc, event, event_id=f"profile-{uuid.uuid4().hex[:8]}")

    return do


def pyspy_binary() -> str:
    """Return py-spy's path, or '' when it is not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or ""


def pyspy_worker(
    bench: Bench,
    send: Callable[[], None],
    focus: str = "stage_training_event (registry/lifecycle.py)",
) -> dict:
    """Run a worker under py-spy (it cannot attach here, so it spawns), send events, fold stacks."""
    out = bench.workdir / "worker-pyspy.txt"
    wrap = [
        pyspy_binary(),
        "record",
        "--idle",
        "--subprocesses",
        "-r",
        "200",
        "-f",
        "raw",
        "-o",
        str(out),
        "--",
    ]
    service = bench.worker(1, wrap=wrap, name="worker-pyspy")
    worker_pids = devkit.stack.descendants(service.proc.pid)
    try:
        send()
    finally:
        os.kill(service.proc.pid, signal.SIGINT)
        service.proc.wait(60)
        _end(worker_pids[:1])
    return fold(out.read_text(), focus)


def _end(pids: list[int]) -> None:
    """Terminate processes this bench started (the worker py-spy spawned) and wait for them."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")


def fold(raw: str, focus: str) -> dict:
    """Fold py-spy raw stacks under `focus`: inclusive share per core function, and leaves."""
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";")]
        if not count.isdigit() or focus not in frames:
            continue
        total += int(count)
        for name in {f for f in frames if " (registry/" in f and f != focus}:
            inclusive[name] += int(count)
        leaves[frames[-1]] += int(count)
    return {
        "focus": focus,
        "samples": total,
        "core_inclusive": _shares(inclusive, total),
        "leaf": _shares(leaves, total),
    }


def _frame(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({repo_relative(match['file'])})"


def _shares(counts: Counter, total: int) -> list[dict]:
    return [{"frame": k, "share": round(v / max(total, 1), 3)} for k, v in counts.most_common(TOP)]


def profile_wsgi(app: Flask, reqs: list[Request]) -> dict:
    """Serve prepared requests through the app in this process under cProfile."""
    client = app.test_client()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for url, body, headers in reqs:
        client.post("/" + url.split("/", 3)[3], data=body, headers=headers)
    profiler.disable()
    per_request = (time.perf_counter() - started) * 1000 / len(reqs)
    return {
        "requests": len(reqs),
        "ms_per_request": round(per_request, 2),
        **top_functions(profiler, len(reqs)),
    }


def top_functions(profiler: cProfile.Profile, n: int) -> dict:
    """Return the top functions by cumulative and by own time, per request, in ms."""
    rows = []
    for (path, line, func), (_, _, own, cum, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        where = repo_relative(path)
        if where.startswith(("bench/", "werkzeug/test", "flask/")) or func == "<module>":
            continue
        rows.append(
            {
                "function": f"{func} ({where}:{line})",
                "cum_ms": round(cum * 1000 / n, 3),
                "own_ms": round(own * 1000 / n, 3),
            }
        )
    return {
        "by_cumulative": sorted(rows, key=lambda r: -r["cum_ms"])[:TOP],
        "by_own": sorted(rows, key=lambda r: -r["own_ms"])[:TOP],
    }


def bot_app(bench: Bench) -> Flask:
    """Build the bot's WSGI app in this process, queueing into the database nobody consumes."""
    from bot.web import create_wsgi_app

    return create_wsgi_app(_settings(bench, slack_signing_secret=SIGNING_SECRET))


def webhooks_app(bench: Bench) -> Flask:
    """Build the webhooks app in this process, queueing into the database nobody consumes."""
    from webhooks.app import create_app

    return create_app(_settings(bench, training_webhook_secrets=(TRAINING_SECRET,)))


def _settings(bench: Bench, **extra: Any) -> Settings:
    from registry.rules.settings import Settings

    return Settings(
        mlflow_tracking_uri=bench.mlflow_url,
        redis_url=f"{bench.redis_base}/{FRONT_DB}",
        slack_bot_token=TOKEN,
        slack_channel=CHANNEL,
        slack_api_url=bench.slack.api_url,
        approvers=CLICKERS,
        **extra,
    )


def import_costs(bench: Bench, code: str) -> dict:
    """Return import time per top-level package for `code` (-X importtime), and their RSS."""
    done = python_probe(bench, ["-X", "importtime", "-c", code])
    own: Counter[str] = Counter()  # microseconds
    modules: dict[str, list[str]] = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            module = parts[2].strip()
            own[module.split(".")[0]] += int(parts[0])
            modules.setdefault(module.split(".")[0], []).append(module)
    top = [name for name, _ in own.most_common(TOP) if not name.startswith("_")][:6]
    return {
        "import_s_by_package": [{"package": p, "seconds": round(own[p] / 1e6, 3)} for p in top],
        "rss_alone_mb": {p: rss_after(bench, IMPORT_ALL.format(modules=modules[p])) for p in top},
        "rss_built_mb": rss_after(bench, code),
        "rss_python_mb": rss_after(bench, "pass"),
    }


IMPORT_ALL = """\
import importlib
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""
RSS_PROBE = """\
{code}
status = open('/proc/self/status').read().split('VmRSS:')[1]
print(int(status.split()[0]) / 1024)
"""


def rss_after(bench: Bench, code: str) -> float:
    """Return a fresh interpreter's RSS (MB) after running `code`."""
    return round(
        float(python_probe(bench, ["-c", RSS_PROBE.format(code=code)]).stdout.split()[-1]), 1
    )
