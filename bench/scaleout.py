"""The scale-out curve: 1, 2 and 4 worker processes on the PostgreSQL stack, beside the floor.

Each point alternates floor chunks (N plain-client processes) with end-to-end bursts (N copies
of the worker service), events spread over 8 models, and records where the CPU went.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.floor import FloorPool, client_for
from bench.load import Samples, in_turn
from bench.pipeline import Batch, NoticeWatch, Pipeline, burst
from bench.prelog import LoggedRun, log_runs, save_model
from bench.report import RESULTS, ms, ratio
from bench.stack import CHANNEL, CLICKERS, SIGNING_SECRET, TOKEN, TRAINING_SECRET, USERS
from devkit.prodstack import MLFLOW_SERVER_WORKERS, ProdStack
from devkit.slack_double import SlackDouble

MODELS = 8
QUEUE = "registry-bot"
HZ = os.sysconf("SC_CLK_TCK")
# The services whose CPU time a point records; "bench" is this process (senders, the Slack
# double's server and the notice watch) and the floor's pool processes.
COMPONENTS = ("mlflow", "postgres", "redis", "webhooks", "bot", "workers", "bench")
ACCESS_LINE = re.compile(r'"(GET|POST|PATCH|DELETE) (/api/[^ ?]+)')


@dataclass(frozen=True)
class ScalePlan:
    """How many worker processes, and how many events per point and per chunk."""

    processes: tuple[int, ...] = (1, 2, 4)
    events: int = 32  # per point, for each of floor and end to end
    chunk: int = 16
    driver: str = "psycopg2"  # the compose file's


QUICK_SCALE = ScalePlan(processes=(1, 2), events=8, chunk=8)


@dataclass
class CpuMeter:
    """CPU seconds used by each component, and by the whole machine, while it is open."""

    stack: ProdStack
    extra: list[int] = field(default_factory=list)  # the floor's pool processes
    used: Counter[str] = field(default_factory=Counter)
    machine: float = 0.0
    wall: float = 0.0

    def __enter__(self) -> CpuMeter:
        self._start, self._machine, self._wall = self._sample(), _machine_busy(), time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        for name, seconds in end.items():
            self.used[name] += max(0.0, seconds - self._start.get(name, 0.0))
        self.machine += _machine_busy() - self._machine
        self.wall += time.time() - self._wall

    def _sample(self) -> dict[str, float]:
        groups = {name: self.stack.pids(name) for name in ("mlflow", "postgres", "redis")}
        groups |= {door: self.stack.pids(door) for door in ("webhooks", "bot")}
        groups["workers"] = [p for w in self.stack.worker_names() for p in self.stack.pids(w)]
        groups["bench"] = [os.getpid(), *self.extra]
        return {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}


def _cpu_seconds(pid: int) -> float:
    """Return the CPU time of `pid` and of the children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / HZ  # utime, stime, cutime, cstime


def _machine_busy() -> float:
    """Return the machine's busy CPU seconds since boot (everyone's, not only ours)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / HZ


def open_stack(plan: ScalePlan) -> ProdStack:
    """Start the production shape (PostgreSQL, MLflow with 2 server workers, gunicorn doors)."""
    settings = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": CHANNEL,
        "APPROVERS": ",".join(CLICKERS),
        "TRAINING_WEBHOOK_SECRET": TRAINING_SECRET,
        # No sweep inside a measured chunk: it would take a worker process from the events.
        "SWEEP_INTERVAL": "3600",
    }
    slack = SlackDouble(token=TOKEN, users=USERS)
    return ProdStack(driver=plan.driver, settings=settings, slack=slack, workers=1).start()


def run_scaleout(plan: ScalePlan, say) -> dict:
    """Measure every point of the curve on one stack; return the data."""
    stack = open_stack(plan)
    try:
        return _points(stack, plan, say)
    finally:
        stack.stop()


def _points(stack: ProdStack, plan: ScalePlan, say) -> dict:
    template = save_model(Path(tempfile.mkdtemp(prefix="scaleout-")))
    watch = NoticeWatch(stack.slack)
    db = redis.Redis.from_url(stack.redis_url)
    pipe = Pipeline(stack.webhooks_url, watch, client_for(stack.mlflow_url), lambda: _drain(db))
    out: dict = {"driver": plan.driver, "models": MODELS, "points": {}}
    try:
        for n in plan.processes:
            out["points"][n] = _point(stack, plan, pipe, template, n)
            p = out["points"][n]
            say(f"scale-out {n}: {p['rate']:.2f} events/s, floor {p['floor_rate']:.2f}")
    finally:
        watch.close()
    return out


def _point(stack: ProdStack, plan: ScalePlan, pipe: Pipeline, template: Path, n: int) -> dict:
    """Run one point: N worker copies and N floor processes, in alternating chunks."""
    stack.scale_workers(n)
    pool = FloorPool(stack.mlflow_url, processes=n)
    tag = f"n{n}"
    e2e_models = [f"scale-{tag}-{j}" for j in range(MODELS)]
    floor_models = [f"floor-{tag}-{j}" for j in range(MODELS)]
    for model in floor_models:
        pipe.client.create_registered_model(model)
    runs = {side: _log(stack, f"{side}-{tag}", plan.events, template) for side in ("e2e", "floor")}
    burst(pipe, e2e_models, _log(stack, f"warm-{tag}", MODELS, template))  # imports, connections
    sides = {"system": _Side(CpuMeter(stack)), "floor": _Side(CpuMeter(stack, _pool_pids(pool)))}
    try:
        for i, k in enumerate(range(0, plan.events, plan.chunk)):
            for turn in in_turn(["floor", "system"], i):
                chunk = runs["e2e" if turn == "system" else "floor"][k : k + plan.chunk]
                with sides[turn].measure(stack):
                    if turn == "floor":
                        done = pool.run(floor_models, chunk)
                        sides[turn].samples.extend(Samples(done.latencies, {}, done.elapsed))
                    else:
                        sides[turn].samples.extend(_samples(burst(pipe, e2e_models, chunk)))
    finally:
        pool.close()
    return _summary(n, sides["system"], sides["floor"])


@dataclass
class _Side:
    """One side of a point (end to end, or the floor): its samples, CPU and MLflow calls."""

    cpu: CpuMeter
    samples: Samples = field(default_factory=Samples)
    calls: Counter[str] = field(default_factory=Counter)

    @contextmanager
    def measure(self, stack: ProdStack) -> Iterator[None]:
        """Count CPU and the MLflow server's requests while one chunk runs."""
        log = stack.log_path("mlflow")
        mark = log.stat().st_size
        with self.cpu:
            yield
        with open(log, "rb") as f:
            f.seek(mark)
            self.calls += _mlflow_calls(f.read().decode(errors="replace"))


def _log(stack: ProdStack, experiment: str, count: int, template: Path) -> list[LoggedRun]:
    return log_runs(stack.mlflow_url, f"scaleout-{experiment}", count, template)


def _samples(batch: Batch) -> Samples:
    return Samples(batch.latencies, {}, batch.elapsed)


def _pool_pids(pool: FloorPool) -> list[int]:
    return [proc.pid for proc in pool.pool._pool]  # type: ignore[attr-defined]


def _drain(db: redis.Redis, timeout: float = 180.0) -> None:
    """Wait until every queued task has run and been acknowledged."""
    deadline = time.monotonic() + timeout
    while db.llen(QUEUE) or db.hlen("unacked"):
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not drain the queue")
        time.sleep(0.01)


def _mlflow_calls(access_log: str) -> Counter[str]:
    """Count the MLflow server's requests by endpoint in a stretch of its access log."""
    return Counter(" ".join(m.groups()) for m in ACCESS_LINE.finditer(access_log))


def _summary(n: int, system: _Side, floor: _Side) -> dict:
    """Return one point as data: rates, latencies, CPU by component, MLflow calls per event."""
    events, floor_events = len(system.samples.latencies), len(floor.samples.latencies)
    return {
        "processes": n,
        "rate": system.samples.rate,
        "floor_rate": floor.samples.rate,
        "latencies": system.samples.latencies,
        "floor_latencies": floor.samples.latencies,
        "p50_ms": ms(system.samples.latencies, 50),
        "p95_ms": ms(system.samples.latencies, 95),
        "floor_p50_ms": ms(floor.samples.latencies, 50),
        "floor_p95_ms": ms(floor.samples.latencies, 95),
        "cpu": _cpu(system.cpu, events),
        "floor_cpu": _cpu(floor.cpu, floor_events),
        "mlflow_calls_per_event": _per_event(system.calls, events),
        "floor_mlflow_calls_per_event": _per_event(floor.calls, floor_events),
    }


def _per_event(calls: Counter[str], events: int) -> dict[str, float]:
    return {k: round(v / max(events, 1), 2) for k, v in calls.most_common()}


def _cpu(meter: CpuMeter, events: int) -> dict:
    """Return CPU ms per event by component, and the cores busy (ours and the machine's)."""
    wall = meter.wall or float("nan")
    ours = sum(meter.used.values())
    return {
        "ms_per_event": {k: round(meter.used[k] * 1000 / max(events, 1), 1) for k in COMPONENTS},
        "cores_ours": round(ours / wall, 2),
        "cores_machine": round(meter.machine / wall, 2),
        "cores_others": round(max(0.0, meter.machine - ours) / wall, 2),
    }


def scale_table(data: dict) -> list[str]:
    """Return the curve as markdown rows."""
    base = data["points"][min(data["points"])]
    rows = [
        "| worker processes | events/s | × 1 process | p50 ms | p95 ms "
        "| floor events/s | floor × 1 | floor p50 ms | floor p95 ms | ours / floor "
        "| cores busy (ours / machine) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, p in sorted(data["points"].items()):
        cpu = p["cpu"]
        rows.append(
            f"| {n} | {p['rate']:.2f} | {ratio(p['rate'], base['rate'])} | {p['p50_ms']:.0f} "
            f"| {p['p95_ms']:.0f} | {p['floor_rate']:.2f} "
            f"| {ratio(p['floor_rate'], base['floor_rate'])} | {p['floor_p50_ms']:.0f} "
            f"| {p['floor_p95_ms']:.0f} | {ratio(p['rate'], p['floor_rate'])} "
            f"| {cpu['cores_ours']} / {cpu['cores_machine']} |"
        )
    return rows


def cpu_table(data: dict) -> list[str]:
    """Return CPU ms per event by component, end to end and floor, as markdown rows."""
    rows = [
        "| worker processes | side | " + " | ".join(COMPONENTS) + " | total |",
        "| --- | --- | " + " | ".join("---" for _ in COMPONENTS) + " | --- |",
    ]
    for n, p in sorted(data["points"].items()):
        for side, key in (("end to end", "cpu"), ("floor", "floor_cpu")):
            per = p[key]["ms_per_event"]
            cells = " | ".join(f"{per[c]:.0f}" for c in COMPONENTS)
            rows.append(f"| {n} | {side} | {cells} | {sum(per.values()):.0f} |")
    return rows


def notes(data: dict, cpus: int) -> list[str]:
    """Return what the curve says: the 2-process gain, where it flattens, what was busiest."""
    points = data["points"]
    one = points[min(points)]
    out = []
    if 2 in points:
        gain = ratio(points[2]["rate"], one["rate"])
        verdict = "meets" if gain >= TARGET_GAIN else "misses"
        out.append(f"2 worker processes: {gain}× the events/s of 1 ({verdict} ≥ {TARGET_GAIN}×).")
    flat = _flattens(points)
    out.append(f"The curve flattens from {flat} worker processes on." if flat else "No flattening.")
    for n, p in sorted(points.items()):
        cpu = p["cpu"]
        out.append(
            f"{n} process(es): {cpu['cores_machine']} of {cpus} cores busy on the machine, "
            f"{cpu['cores_ours']} of them ours, {cpu['cores_others']} other work."
        )
    others = max(p["cpu"]["cores_others"] for p in points.values())
    if others > SHARED_CORES:
        out.append(
            f"The machine was shared: other work held up to {others} cores. More of our "
            "processes win a larger share of the CPU from it, which inflates the gain."
        )
    out.append(_ceilings(points[max(points)], cpus))
    return out


def _ceilings(point: dict, cpus: int) -> str:
    """Say what CPU per event allows: the machine's cores, and MLflow's server workers."""
    per = point["cpu"]["ms_per_event"]
    total = sum(per.values())
    shares = ", ".join(f"{c} {per[c] * 100 / total:.0f}%" for c in sorted(per, key=per.get)[::-1])
    machine = cpus * 1000 / total
    # Each MLflow server worker runs Flask under one GIL: at most one core each.
    server = MLFLOW_SERVER_WORKERS * 1000 / per["mlflow"]
    return (
        f"CPU per event end to end with {point['processes']} processes: {total:.0f} ms "
        f"({shares}). {cpus} cores cap the loop at ≈ {machine:.1f} events/s; "
        f"{MLFLOW_SERVER_WORKERS} MLflow server workers at ≈ {server:.1f} events/s."
    )


TARGET_GAIN = 1.6
FLAT_GAIN = 1.2  # doubling the processes for less than this gain is flat
SHARED_CORES = 0.3  # other work busier than this makes the curve a share of a contended CPU


def _flattens(points: dict) -> int | None:
    ordered = sorted(points)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if points[after]["rate"] < FLAT_GAIN * points[before]["rate"]:
            return before
    return None


def write_results(day: str, suffix: str, data: dict, lines: list[str]) -> list[Path]:
    """Write bench/results/<day>-scaleout{suffix}.{json,md,png}; return the paths."""
    import json

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{day}-scaleout{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = [f"# registry-bot scale-out, {day}", "", *scale_table(data), "", "CPU ms per event:", ""]
    md += [*cpu_table(data), "", "MLflow requests per event (end to end / floor):", ""]
    md += [*calls_table(data), "", *(f"- {line}" for line in lines), ""]
    stem.with_suffix(".md").write_text("\n".join(md))
    return [stem.with_suffix(".json"), stem.with_suffix(".md"), plot(stem, data)]


def calls_table(data: dict) -> list[str]:
    """Return the MLflow requests per event, end to end beside the floor, as markdown rows."""
    rows = ["| worker processes | endpoint | end to end | floor |", "| --- | --- | --- | --- |"]
    for n, p in sorted(data["points"].items()):
        ours, floor = p["mlflow_calls_per_event"], p["floor_mlflow_calls_per_event"]
        for endpoint in sorted(set(ours) | set(floor), key=lambda e: -ours.get(e, 0)):
            rows.append(
                f"| {n} | {endpoint} | {ours.get(endpoint, 0)} | {floor.get(endpoint, 0)} |"
            )
        rows.append(f"| {n} | all | {sum(ours.values()):.1f} | {sum(floor.values()):.1f} |")
    return rows


def plot(stem: Path, data: dict) -> Path:
    """Plot events/s and p50/p95 latency against worker processes, beside the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(data["points"].items())
    xs = [n for n, _ in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(xs, [p["rate"] for _, p in points], "o-", label="end to end")
    left.plot(xs, [p["floor_rate"] for _, p in points], "s--", label="floor (plain client)")
    left.plot(xs, [points[0][1]["rate"] * n for n in xs], ":", color="grey", label="linear")
    left.set(xlabel="worker processes", ylabel="events/s", title="Throughput, 8 models")
    for key, style in (("p50_ms", "o-"), ("p95_ms", "o:")):
        right.plot(xs, [p[key] for _, p in points], style, label=f"end to end {key[:3]}")
        floor = [p[f"floor_{key}"] for _, p in points]
        right.plot(xs, floor, style.replace("o", "s"), label=f"floor {key[:3]}")
    right.set(xlabel="worker processes", ylabel="ms", title="Latency per event")
    for ax in (left, right):
        ax.set_xticks(xs)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = stem.parent / f"{stem.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
