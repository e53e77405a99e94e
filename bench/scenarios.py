"""The scenarios, each against the one real stack: floor, pipeline, growth, doors, footprint."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from bench import footprint
from bench.floor import FloorPool, FloorRun, floor_event, minimal_event
from bench.frontdoor import click_rounds, compare_doors, single_clicks
from bench.load import Samples, in_turn
from bench.pipeline import Batch, NoticeWatch, Pipeline, burst, paired, seed_versions
from bench.prelog import LoggedRun, log_runs, save_model
from bench.report import ms
from bench.stack import FRONT_DB, QUEUE, WORKER_DB, Bench, Service, stop


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run."""

    events: int = 40
    chunk: int = 10  # events per alternating floor / end-to-end chunk when timing throughput
    growth_sizes: tuple[int, ...] = (1, 100, 1000)
    growth_events: int = 10
    click_rounds: int = 10
    single_clicks: int = 20
    rate: float = 100.0
    rate_seconds: float = 10.0
    saturation_seconds: float = 10.0
    startup_repeats: int = 3
    profile_events: int = 10
    recovery_trials: int = 5


QUICK = Plan(
    events=6,
    chunk=3,
    growth_sizes=(1, 10, 30),
    growth_events=2,
    click_rounds=2,
    single_clicks=5,
    rate_seconds=2.0,
    saturation_seconds=2.0,
    startup_repeats=1,
    profile_events=3,
    recovery_trials=0,  # one trial outlasts the 60 s visibility timeout: `bench recovery --quick`
)


def say(text: str) -> None:
    """Report progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Runs:
    """Pre-logs runs per batch, each batch in its own experiment."""

    def __init__(self, bench: Bench):
        self.bench, self.made = bench, 0
        self.template = save_model(bench.workdir)

    def log(self, batch: str, count: int) -> list[LoggedRun]:
        """Log `count` runs for a batch before it is timed."""
        self.made += 1
        return log_runs(
            self.bench.mlflow_url, f"bench-{self.made:02d}-{batch}", count, self.template
        )


def pipeline(
    bench: Bench, runs: Runs, plan: Plan, pipe: Pipeline, pool: FloorPool
) -> tuple[dict, Service]:
    """Time events end to end with --concurrency 1, then 2, each beside its floor."""
    out: dict = {}
    worker = None
    for concurrency in (1, 2):
        stop(worker)
        warm_runs = runs.log(f"e2e-c{concurrency}-warm", 2 * concurrency)
        warm_models = [f"e2e-c{concurrency}-warm-{j}" for j in range(concurrency)]
        worker = bench.worker(concurrency)
        rss = footprint.memory(worker)
        warm = burst(pipe, warm_models, warm_runs)
        out[concurrency] = {
            "start_s": worker.start_seconds,
            "rss_start": rss,
            "cold_latencies": warm.latencies,
            **latency_pairs(bench, runs, pipe, f"c{concurrency}", plan.events),
            **throughput(bench, runs, plan, pipe, pool, concurrency, models=1),
        }
        if concurrency > 1:  # the worker locks per model: let the pool work on two at once
            out[concurrency]["two_models"] = throughput(bench, runs, plan, pipe, pool, 2, models=2)
        rates = out[concurrency]
        say(f"e2e c={concurrency}: {rates['rate']:.2f} events/s, floor {rates['floor_rate']:.2f}")
    assert worker is not None
    return out, worker


def latency_pairs(
    bench: Bench, runs: Runs, pipe: Pipeline, tag: str, count: int, seeded: int = 0
) -> dict:
    """Time events one at a time, each beside a floor event and a minimal floor event.

    Each works on a model of its own (twins: the same number of existing versions).
    """
    model, floor_model, minimal_model = f"e2e-{tag}", f"floor-{tag}", f"minimal-{tag}"
    for name in (model, floor_model, minimal_model):
        _new_model(bench, runs, name, seeded)
    e2e_runs = runs.log(model, count)
    floors = [
        (lambda run: floor_event(bench.client, floor_model, run), runs.log(floor_model, count)),
        (
            lambda run: minimal_event(bench.client, minimal_model, run),
            runs.log(minimal_model, count),
        ),
    ]
    batch, (floor_times, minimal_times) = paired(pipe, model, e2e_runs, floors)
    return {
        "model": model,
        "latencies": batch.latencies,
        "floor_latencies": floor_times,
        "minimal_latencies": minimal_times,
    }


def calls(bench: Bench, runs: Runs, plan: Plan) -> dict:
    """Count each one's MLflow (and Slack) requests per event, in this process.

    The worker's own code path (registry.flows.lifecycle with the worker's services), the
    floor and the minimal floor, each on a registered model of its own.
    """
    from bench import profile

    svc, client = profile.worker_services(bench), bench.client
    for name in ("calls-floor", "calls-minimal", "calls-worker"):
        client.create_registered_model(name)
    n = plan.profile_events
    out = {
        "worker": profile.tally_events(
            profile.worker_event(svc, "calls-worker"), runs.log("calls-worker", n)
        ),
        "floor": profile.tally_events(
            lambda run: floor_event(client, "calls-floor", run), runs.log("calls-floor", n)
        ),
        "minimal": profile.tally_events(
            lambda run: minimal_event(client, "calls-minimal", run), runs.log("calls-minimal", n)
        ),
    }
    say(
        "calls per event: worker {}, floor {}, minimal floor {}".format(
            *(out[k]["calls_per_event"] for k in ("worker", "floor", "minimal"))
        )
    )
    return out


def _new_model(bench: Bench, runs: Runs, name: str, versions: int) -> None:
    """Register `name`, already holding `versions` versions of one logged model."""
    if versions:
        seed_versions(bench.client, name, runs.log(f"seed-{name}", 1)[0], versions)
    else:
        bench.client.create_registered_model(name)


def throughput(
    bench: Bench,
    runs: Runs,
    plan: Plan,
    pipe: Pipeline,
    pool: FloorPool,
    processes: int,
    models: int,
) -> dict:
    """Alternate floor chunks (N processes) and end-to-end bursts over `models` models."""
    tag = f"c{processes}-{models}m"
    floor_models = [f"floor-{tag}-{j}" for j in range(processes)]
    for model in floor_models:
        bench.client.create_registered_model(model)
    e2e_runs, floor_runs = (
        runs.log(f"e2e-{tag}", plan.events),
        runs.log(f"floor-{tag}", plan.events),
    )
    system, base = Samples(), Samples()
    for i, k in enumerate(range(0, plan.events, plan.chunk)):
        for turn in in_turn(["floor", "system"], i):
            if turn == "floor":
                base.extend(_floor_samples(pool.run(floor_models, floor_runs[k : k + plan.chunk])))
            else:
                e2e_models = [f"e2e-{tag}-{j}" for j in range(models)]
                system.extend(_burst_samples(burst(pipe, e2e_models, e2e_runs[k : k + plan.chunk])))
    return _rates(models, plan.chunk, system, base)


def _rates(models: int, chunk: int, system: Samples, base: Samples) -> dict:
    """Return one throughput pass as data: the system's and the floor's rates and latencies."""
    return {
        "models": models,
        "chunk": chunk,
        "rate": system.rate,
        "burst_latencies": system.latencies,
        "floor_rate": base.rate,
        "floor_burst_latencies": base.latencies,
    }


def _floor_samples(run: FloorRun) -> Samples:
    return Samples(run.latencies, {}, run.elapsed)


def _burst_samples(batch: Batch) -> Samples:
    return Samples(batch.latencies, {}, batch.elapsed)


def growth(bench: Bench, runs: Runs, plan: Plan, pipe: Pipeline) -> dict:
    """Time events end to end (beside the floor) on models that already have N versions."""
    out = {}
    for size in plan.growth_sizes:
        started = time.perf_counter()
        out[size] = latency_pairs(
            bench, runs, pipe, f"grow-{size}", plan.growth_events, seeded=size
        )
        out[size]["seconds"] = time.perf_counter() - started
        say(f"growth {size}: {len(out[size]['latencies'])} events")
    return out


def clicks(bench: Bench, plan: Plan, bot: Service, bare: Service, model_name: str) -> dict:
    """Have 20 clickers press Approve at once on staged versions; then single clicks."""
    staged = [(model_name, str(v)) for v in range(1, min(plan.click_rounds, plan.events) + 1)]
    together, bare_rounds = click_rounds(bot.url, bench.slack.url, staged, bare.url)
    single = single_clicks(bot.url, bench.slack.url, staged[-1], plan.single_clicks)
    say(f"clicks: {len(together.latencies)} concurrent, {len(single.latencies)} single")
    return {
        "concurrent": _summary(together, raw=True),
        "bare_concurrent": _summary(bare_rounds, raw=True),
        "single": _summary(single, raw=True),
    }


def drain(bench: Bench, timeout: float = 180.0) -> float:
    """Wait until the worker's queue is empty and nothing is unacknowledged; return the wait."""
    started, db = time.monotonic(), bench.redis(WORKER_DB)
    while time.monotonic() - started < timeout:
        if not db.llen(QUEUE) and not db.hlen("unacked"):
            return time.monotonic() - started
        time.sleep(0.01)
    raise TimeoutError("the worker did not drain its queue")


def doors(bench: Bench, plan: Plan, bare: Service) -> dict:
    """Compare /hooks/training with the bare endpoint, both under gunicorn -w 2."""
    hooks = bench.gunicorn("webhooks-front", "webhooks:create_app()", FRONT_DB)
    start_rss = {"webhooks": footprint.memory(hooks)}
    runs = compare_doors(
        bare.url,
        hooks.url,
        rate=plan.rate,
        seconds=plan.rate_seconds,
        saturation_seconds=plan.saturation_seconds,
    )
    queued = bench.redis(FRONT_DB).llen(QUEUE)
    out = {
        "start_s": {"webhooks": hooks.start_seconds, "bare": bare.start_seconds},
        "rss_start": start_rss,
        "rss_after": {"webhooks": footprint.memory(hooks), "bare": footprint.memory(bare)},
        "queued_events": queued,
        "runs": {name: _summary(s, raw=name.endswith("open")) for name, s in runs.items()},
    }
    for service in (hooks, bare):
        stop(service)
    bench.redis(FRONT_DB).flushdb()
    say(f"front doors: {queued} events queued with no worker")
    return out


def _summary(samples: Samples, *, raw: bool = False) -> dict:
    out = {
        "n": len(samples.latencies),
        "p50_ms": ms(samples.latencies, 50),
        "p99_ms": ms(samples.latencies, 99),
        "rate": round(samples.rate, 1),
        "statuses": samples.statuses,
        "lag_max_ms": round(samples.lag_max * 1000, 1),
    }
    return out | ({"latencies": samples.latencies} if raw else {})


def recover(bench: Bench, runs: Runs, plan: Plan, hooks: Service) -> dict:
    """Time recovery from whole-worker kills, trial after trial, on a worker of each's own."""
    from bench.recovery import recovery

    watch = NoticeWatch(bench.slack)
    try:
        return recovery(bench, runs, hooks.url, watch, plan.recovery_trials)
    finally:
        watch.close()


def run_all(bench: Bench, runs: Runs, plan: Plan) -> dict:
    """Run every scenario in an order that keeps each one's measurements quiet."""
    data: dict = {"mlflow_start_s": bench.mlflow_start_seconds}
    hooks = bench.gunicorn("webhooks", "webhooks:create_app()", WORKER_DB)
    bot = bench.gunicorn("bot", "bot:create_wsgi_app()", WORKER_DB)
    bare = bench.gunicorn("bare", "bench.bare:create_app()", FRONT_DB)
    data["rss_start"] = {"webhooks": footprint.memory(hooks), "bot": footprint.memory(bot)}
    data["start_s"] = {"webhooks": [hooks.start_seconds], "bot": [bot.start_seconds]}
    worker = worker_scenarios(bench, runs, plan, hooks, bot, bare, data)
    for service in (worker, bot):
        stop(service)
    data["recovery"] = recover(bench, runs, plan, hooks)
    data["calls"] = calls(bench, runs, plan)  # in this process, on a quiet server
    stop(hooks)
    data["doors"] = doors(bench, plan, bare)
    for name, times in footprint.startup_times(bench, plan.startup_repeats).items():
        data["start_s"][name] += times
    data["imports_mlflow"] = footprint.imports_mlflow(bench)
    return data


def worker_scenarios(
    bench: Bench, runs: Runs, plan: Plan, hooks: Service, bot: Service, bare: Service, data: dict
) -> Service:
    """Run what needs the pipeline's worker (end to end, growth, clicks), then weigh it."""
    pool, watch = FloorPool(bench.mlflow_url), NoticeWatch(bench.slack)
    pipe = Pipeline(hooks.url, watch, bench.client, settle=lambda: drain(bench))
    try:
        data["pipeline"], worker = pipeline(bench, runs, plan, pipe, pool)
        data["growth"] = growth(bench, runs, plan, pipe)
        data["clicks"] = clicks(bench, plan, bot, bare, data["pipeline"][2]["model"])
        data["drain_s"] = drain(bench)
        data["rss_after"] = {"bot": footprint.memory(bot), "worker": footprint.memory(worker)}
    finally:
        watch.close()
        pool.close()
    data["worker_handled"] = {
        "events": 4 + 2 * plan.events + len(plan.growth_sizes) * plan.growth_events,
        "clicks": data["clicks"]["concurrent"]["n"] + data["clicks"]["single"]["n"],
    }
    return worker
