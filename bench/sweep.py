"""The sweep's cost against the registry's size: MLflow calls and seconds per sweep.

Three registries of 10, 1,000 and 10,000 versions (the largest 100 models x 100 versions),
each on a private `mlflow server` (SQLite) of its own, are seeded straight into MLflow's
tables through its own SQLAlchemy models: what a registry that registry-bot ran for a year
leaves (every version decided and announced, each model's newest in Production, all of them
older than CATCHUP_WINDOW). The sweep runs here, in this process, as the worker's task runs
it, round after round, the registries taking turns; then 20 versions over 10 models of the
largest become pending (registered and staged through the REST API, as the worker leaves
them), and the rounds go on, the largest beside the smallest.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

import devkit.stack
from bench.load import in_turn
from bench.profile import tally_calls
from bench.report import RESULTS, Figure, at_most, ratio
from bench.stack import CHANNEL, CLICKERS, TOKEN
from devkit.slack_double import SlackDouble

if TYPE_CHECKING:
    from registry.flows.sweep import SweepMemory
    from registry.ports.services import Services

DAY_MS = 86_400_000
POLICY = (
    "defaults:\n  remind_every: 24h\n  approval_expires_after: 7d\n  protect_production: alert\n"
)
PENDING_MODELS = 10
SWEEP_INTERVAL = 60.0  # SPEC's default


@dataclass(frozen=True)
class SweepPlan:
    """The registries' shapes (models, versions each), rounds per phase, pending versions."""

    shapes: tuple[tuple[int, int], ...] = ((1, 10), (10, 100), (100, 100))
    rounds: int = 10
    pending: int = 20
    one_server: bool = False  # one registry grown shape by shape (only one server to start)


# One server: 10 versions, then 9 models of 50 more (460); the sizes' rounds do not alternate.
QUICK_SWEEP = SweepPlan(shapes=((1, 10), (9, 50)), rounds=3, pending=10, one_server=True)


@dataclass
class Ticks:
    """The sweeps' clock: the real time, plus SWEEP_INTERVAL for each sweep run so far."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Registry:
    """One seeded registry: its server, and the services and memory its sweeps run with."""

    versions: int
    url: str
    svc: Services
    memory: SweepMemory
    clock: Ticks


def run_sweep_bench(plan: SweepPlan, say: Callable[[str], None]) -> dict:
    """Seed the registries, sweep them in turn with nothing pending, then with some pending."""
    from registry.flows.sweep import SweepMemory

    workdir = Path(tempfile.mkdtemp(prefix="registry-bot-sweep-"))
    slack = SlackDouble(token=TOKEN)
    slack.start()
    procs = []
    try:
        if plan.one_server:
            return _grown(plan, workdir, slack, procs, say)
        ports = [devkit.stack.free_port() for _ in plan.shapes]
        with ThreadPoolExecutor(len(ports)) as pool:  # the servers start side by side
            procs = list(
                pool.map(
                    lambda i: devkit.stack.start_mlflow_server(ports[i], workdir / f"mlflow-{i}"),
                    range(len(ports)),
                )
            )
        registries = []
        for i, (models, each) in enumerate(plan.shapes):
            started = time.perf_counter()
            seed(workdir / f"mlflow-{i}" / "mlflow.db", models, each)
            say(f"sweep: seeded {models * each} versions in {time.perf_counter() - started:.1f} s")
            url = f"http://127.0.0.1:{ports[i]}"
            clock = Ticks()
            svc = _services(url, slack, clock)
            registries.append(Registry(models * each, url, svc, SweepMemory(), clock))
        return _measure(plan, registries, say)
    finally:
        slack.stop()
        for proc in reversed(procs):
            devkit.stack.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _grown(
    plan: SweepPlan, workdir: Path, slack: SlackDouble, procs: list, say: Callable[[str], None]
) -> dict:
    """Grow one registry shape by shape, sweeping it at each size; then make some pending."""
    from registry.flows.sweep import SweepMemory

    port = devkit.stack.free_port()
    procs.append(devkit.stack.start_mlflow_server(port, workdir / "mlflow"))
    url, total, models_so_far = f"http://127.0.0.1:{port}", 0, 0
    first, idle = {}, {}
    for models, each in plan.shapes:
        seed(workdir / "mlflow" / "mlflow.db", models, each, first_model=models_so_far)
        models_so_far, total = models_so_far + models, total + models * each
        clock = Ticks()
        registry = Registry(total, url, _services(url, slack, clock), SweepMemory(), clock)
        first[total] = one_sweep(registry)  # a new process's first sweep: a full read
        idle[total] = [one_sweep(registry) for _ in range(plan.rounds)]
        say(f"sweep: {plan.rounds} sweeps of {total} versions, nothing pending")
    models = make_pending(registry, plan.pending)
    settle = one_sweep(registry)
    busy = [one_sweep(registry) for _ in range(plan.rounds)]
    pending = {"versions": plan.pending, "models": models, "settle": settle}
    pending |= {"smallest": _summary(idle[min(idle)]), "largest": _summary(busy)}
    summaries = {n: _summary(runs) for n, runs in idle.items()}
    return {"sizes": list(idle), "first": first, "idle": summaries, "pending": pending}


def _measure(plan: SweepPlan, registries: list[Registry], say: Callable[[str], None]) -> dict:
    smallest, largest = registries[0], registries[-1]
    first = {r.versions: one_sweep(r) for r in registries}  # a process's first sweep: a full read
    say("sweep: first (full) sweeps done")
    idle: dict[int, list[dict]] = {r.versions: [] for r in registries}
    for i in range(plan.rounds):
        for r in in_turn(registries, i):
            idle[r.versions].append(one_sweep(r))
    say(f"sweep: {plan.rounds} rounds with nothing pending")
    models = make_pending(largest, plan.pending)
    settle = one_sweep(largest)  # the models just changed: read in full once
    busy: dict[str, list[dict]] = {"smallest": [], "pending": []}
    for i in range(plan.rounds):
        for name in in_turn(list(busy), i):
            busy[name].append(one_sweep(smallest if name == "smallest" else largest))
    say(f"sweep: {plan.rounds} rounds with {plan.pending} pending over {models} models")
    return {
        "sizes": [r.versions for r in registries],
        "first": first,
        "idle": {n: _summary(runs) for n, runs in idle.items()},
        "pending": {
            "versions": plan.pending,
            "models": models,
            "settle": settle,
            "smallest": _summary(busy["smallest"]),
            "largest": _summary(busy["pending"]),
        },
    }


def one_sweep(registry: Registry) -> dict:
    """Sweep once as the worker's task does (a lock per model swept); count and time it."""
    from registry.flows.sweep import sweep

    registry.clock.offset += SWEEP_INTERVAL  # the scheduler's sweeps are this far apart
    with tally_calls() as tally:
        started = time.perf_counter()
        report = sweep(registry.svc, lambda name: nullcontext(), memory=registry.memory)
        seconds = time.perf_counter() - started
    by_endpoint: dict[str, list] = {}  # endpoint: [calls, ms]
    for (endpoint, caller), count in tally.calls.items():
        row = by_endpoint.setdefault(endpoint, [0, 0.0])
        row[0] += count
        row[1] = round(row[1] + tally.seconds[endpoint, caller] * 1000, 1)
    done = {k: len(v) for k, v in report.done.items()}
    return {"calls": sum(tally.calls.values()), "seconds": seconds, "by": by_endpoint, "done": done}


def _summary(runs: list[dict]) -> dict:
    return {
        "calls": median(r["calls"] for r in runs),
        "seconds": median(r["seconds"] for r in runs),
        "by": runs[-1]["by"],
        "done": [r["done"] for r in runs if r["done"]],
        "all_seconds": [r["seconds"] for r in runs],
    }


def _services(url: str, slack: SlackDouble, clock: Ticks) -> Services:
    from registry.process.connect import build_services
    from registry.rules.policy import parse_policy
    from registry.rules.settings import Settings

    settings = Settings(
        mlflow_tracking_uri=url,
        slack_bot_token=TOKEN,
        slack_channel=CHANNEL,
        slack_api_url=slack.api_url,
        approvers=CLICKERS,
        mlflow_webhook_secret="bench-mlflow-secret",  # the catch-up reads its window too
        policy=parse_policy(POLICY),
    )
    svc = build_services(settings)
    svc.clock = clock
    return svc


# -- seeding --------------------------------------------------------------------------


def seed(db_path: Path, models: int, each: int, *, first_model: int = 0) -> None:
    """Write `models` x `each` decided versions into a server's tables, in one transaction."""
    import sqlalchemy
    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModel,
    )

    now = int(time.time() * 1000)
    rows: dict[str, list[dict]] = {"models": [], "versions": [], "tags": []}
    for m in range(first_model, first_model + models):
        name = f"seeded-{m:03d}"
        rows["models"].append(_row(name=name, creation_time=now - 400 * DAY_MS))
        for v in range(1, each + 1):
            created = now - 2 * DAY_MS - (each - v) * 3_600_000  # all before CATCHUP_WINDOW
            stage = "Production" if v == each else "Archived"
            rows["versions"].append(_version_row(name, v, created, stage))
            for key, value in decided_tags(v, created, last=v == each).items():
                rows["tags"].append(_row(name=name, version=v, key=key, value=value))
        rows["models"][-1]["last_updated_time"] = now - 2 * DAY_MS - m * 3_600_000
    engine = sqlalchemy.create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.execute(SqlRegisteredModel.__table__.insert(), rows["models"])
        conn.execute(SqlModelVersion.__table__.insert(), rows["versions"])
        conn.execute(SqlModelVersionTag.__table__.insert(), rows["tags"])
    engine.dispose()


def _row(**values: object) -> dict:
    return {"workspace": "default", **values}


def _version_row(name: str, version: int, created: int, stage: str) -> dict:
    run_id = uuid.uuid4().hex
    return _row(
        name=name,
        version=version,
        creation_time=created,
        last_updated_time=created + 3_600_000,
        description=None,
        user_id=None,
        current_stage=stage,
        source=f"s3://bench-artifacts/{run_id}/model",
        storage_location=None,
        run_id=run_id,
        run_link=None,
        status="READY",
        status_message=None,
    )


def decided_tags(version: int, created: int, *, last: bool) -> dict[str, str]:
    """Return the tags of a version staged, approved, promoted and (unless last) replaced."""
    from registry.rules.record import format_stamp

    def at(hours: float) -> str:
        return format_stamp(created / 1000 + hours * 3600)

    log = [
        {"type": "staged", "at": at(0), "actor": "UREQUESTER", "reason": ""},
        {"type": "promoted", "at": at(0.5), "actor": "UCLICK00", "reason": ""},
    ]
    tags = {
        "source_key": f"runs:/{version}/model",
        "created_by": "registry-bot",
        "requested_by": "UREQUESTER",
        "staged_at": at(0),
        "notice_channel": CHANNEL,
        "notice_ts": f"{created / 1000:.6f}",
        "noticed_at": at(0),
        "approvals": "UCLICK00",
        "decision": "approved",
        "decided_by": "UCLICK00",
        "decided_at": at(0.5),
        "announced": at(0.5),
        "production_since": at(0.5),
    }
    if not last:
        log.append({"type": "archived", "at": at(1), "actor": "UCLICK00", "reason": "replaced"})
        tags |= {"production_until": at(1), "archived_at": at(1)}
    tags["log"] = json.dumps(log, separators=(",", ":"))
    return {f"registry_bot.{k}": v for k, v in tags.items()}


def make_pending(registry: Registry, count: int) -> int:
    """Register and stage `count` versions over PENDING_MODELS models, notices posted, awaiting
    approval (neither a reminder nor the expiry due): what the worker leaves. Return the models."""
    from registry.rules.record import format_stamp
    from registry.rules.versions import PENDING_TAG

    gw, models = registry.svc.gateway, min(PENDING_MODELS, count)
    client = gw.client  # type: ignore[attr-defined]
    for i in range(count):
        name = f"seeded-{i % models:03d}"
        now = format_stamp(time.time())
        tags = {
            "registry_bot.created_by": "registry-bot",
            "registry_bot.requested_by": "UREQUESTER",
            "registry_bot.staged_at": now,
            "registry_bot.notice_channel": CHANNEL,
            "registry_bot.notice_ts": f"{time.time():.6f}",
            "registry_bot.noticed_at": now,
            PENDING_TAG: "true",
        }
        mv = client.create_model_version(
            name, f"s3://bench-artifacts/{uuid.uuid4().hex}/model", tags=tags
        )
        gw.move(name, str(mv.version), "Staging")
    return models


def figures(data: dict) -> list[Figure]:
    """Return the sweep's calls and seconds by registry size, as ratios to the smallest."""
    sizes, idle = data["sizes"], data["idle"]
    base, out = idle[sizes[0]], []
    for n in sizes[1:]:
        for what in ("calls", "seconds"):
            out.append(
                at_most(
                    "sweep",
                    f"{what}, nothing pending, {n:,} / {sizes[0]} versions",
                    ratio(idle[n][what], base[what]),
                    1.5,
                )
            )
    for n in sizes:
        out.append(Figure("sweep", f"calls, nothing pending, {n:,} versions", idle[n]["calls"]))
        out.append(
            Figure("sweep", f"ms, nothing pending, {n:,} versions", _ms(idle[n]["seconds"]), "ms")
        )
        first = data["first"][n]
        out.append(
            Figure("sweep", f"calls, first sweep of a process, {n:,} versions", first["calls"])
        )
    pend = data["pending"]
    where = f"{pend['versions']} pending over {pend['models']} models, {sizes[-1]:,} versions"
    small = pend["smallest"]
    out += [
        Figure("sweep", f"calls, {where}", pend["largest"]["calls"]),
        Figure("sweep", f"ms, {where}", _ms(pend["largest"]["seconds"]), "ms"),
        Figure(
            "sweep",
            f"calls, {where} / {sizes[0]} versions idle",
            ratio(pend["largest"]["calls"], small["calls"]),
            "×",
        ),
        Figure(
            "sweep",
            f"seconds, {where} / {sizes[0]} versions idle",
            ratio(pend["largest"]["seconds"], small["seconds"]),
            "×",
        ),
        Figure(
            "sweep",
            f"calls, the sweep after they became pending ({where})",
            pend["settle"]["calls"],
        ),
    ]
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def plot(day: str, suffix: str, data: dict) -> Path:
    """Plot the sweep's calls and time against the registry's size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, idle, pend = data["sizes"], data["idle"], data["pending"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, what, unit in (
        (left, "calls", "MLflow calls per sweep"),
        (right, "seconds", "ms per sweep"),
    ):
        scale = 1000 if what == "seconds" else 1
        ax.plot(sizes, [idle[n][what] * scale for n in sizes], "o-", label="nothing pending")
        ax.plot(
            [sizes[-1]],
            [pend["largest"][what] * scale],
            "s",
            label=f"{pend['versions']} pending over {pend['models']} models",
        )
        ax.plot(
            sizes,
            [data["first"][n][what] * scale for n in sizes],
            "x--",
            label="a process's first sweep (reads every version)",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("versions in the registry")
        ax.set_ylabel(unit + " (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title("Sweep: MLflow calls")
    right.set_title("Sweep: time")
    fig.tight_layout()
    path = RESULTS / f"{day}{suffix}-sweep.png"
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


METHOD = """\
Sweep: {method} The sweeps' clock steps SWEEP_INTERVAL (60 s) between sweeps, as the
scheduler's would; they use the worker's settings (a policy with reminders, expiry and
protect_production: alert; MLFLOW_WEBHOOK_SECRET set, so the catch-up reads its window);
locks are no-ops here (the task's Redis lock is one round trip per model swept). Calls
are MLflow REST requests counted in this process; seconds are wall time per sweep, the
median over {rounds} rounds in turn.
"""


def notes(data: dict, plan: SweepPlan) -> list[str]:
    """Say how the sweep figures were measured."""
    text = METHOD.format(
        method=" ".join((__doc__ or "").split("\n\n", 1)[1].split()), rounds=plan.rounds
    )
    if plan.one_server:
        text += (
            " This quick run grows one registry on one server instead, shape by shape, so its"
            " sizes do not take turns."
        )
    return [" ".join(text.split())]
