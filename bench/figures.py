"""Turn the scenarios' raw data into figures against their targets, and say how they were made."""

from __future__ import annotations

import os
from statistics import median

from bench.recovery import EVENTS as RECOVERY_EVENTS
from bench.recovery import recovery_figures
from bench.report import Figure, at_least, at_most, below, ms, ratio
from registry.adapters.queue import VISIBILITY_TIMEOUT

SLACK_DEADLINE_MS = 3000.0
ACK_TARGET_MS = 90.0
GUNICORN_RSS_MB, WORKER_RSS_MB, START_S = 80.0, 300.0, 1.5


def lat(section: str, name: str, seconds: list[float], q: float = 50) -> Figure:
    """Return the q-th percentile of `seconds` as a figure in ms."""
    return Figure(section, name, ms(seconds, q), "ms")


def info(section: str, name: str, value: float | str, unit: str = "") -> Figure:
    """Return a figure without a target."""
    return Figure(section, name, value, unit)


def floor_figures(pipe: dict) -> list[Figure]:
    """Return the floor's per-event times and throughput, measured beside each worker."""
    one, two, pair = pipe[1], pipe[2], pipe[2]["two_models"]
    rates = (
        ("1 process", one),
        ("2 processes, beside one-model bursts", two),
        ("2 processes, beside two-model bursts", pair),
    )
    return [
        lat("floor", "per event p50, 1 process (beside --concurrency 1)", one["floor_latencies"]),
        lat(
            "floor", "per event p95, 1 process (beside --concurrency 1)", one["floor_latencies"], 95
        ),
        lat("floor", "per event p50, 1 process (beside --concurrency 2)", two["floor_latencies"]),
        lat("floor", "per event p50, 2 processes at once", pair["floor_burst_latencies"]),
        lat("floor", "per event p95, 2 processes at once", pair["floor_burst_latencies"], 95),
        *[
            info("floor", f"events/s, {how}", round(run["floor_rate"], 2), "events/s")
            for how, run in rates
        ],
    ]


def pipeline_figures(pipe: dict) -> list[Figure]:
    """Return end-to-end latency and throughput, as ratios to the floor measured beside them."""
    out = []
    for c, run in pipe.items():
        lat_ratio = ratio(ms(run["latencies"], 50), ms(run["floor_latencies"], 50))
        least = ratio(ms(run["latencies"], 50), ms(run["minimal_latencies"], 50))
        out += [
            lat("end to end", f"p{q}, --concurrency {c}", run["latencies"], q) for q in (50, 95, 99)
        ]
        out.append(at_most("end to end", f"p50 / floor p50, --concurrency {c}", lat_ratio, 1.3))
        out.append(
            lat(
                "end to end",
                f"minimal floor p50 (beside --concurrency {c})",
                run["minimal_latencies"],
            )
        )
        out.append(at_most("end to end", f"p50 / minimal floor p50, --concurrency {c}", least, 1.5))
        out += _rate_figures(c, run, judged=False)
        out += _rate_figures(c, run["two_models"], judged=True) if "two_models" in run else []
        out.append(
            lat(
                "end to end",
                f"p50 inside one-model bursts, --concurrency {c}",
                run["burst_latencies"],
            )
        )
        out.append(
            lat(
                "end to end",
                f"slowest first (cold) event, --concurrency {c}",
                run["cold_latencies"],
                100,
            )
        )
    return out


def _rate_figures(c: int, run: dict, *, judged: bool) -> list[Figure]:
    """Return one throughput pass: events/s, and its ratio to the floor's beside it."""
    where = f"{run['models']} model{'s' if run['models'] > 1 else ''}, --concurrency {c}"
    name = f"events/s / floor events/s with {c} process{'es' if c > 1 else ''} ({where})"
    value = ratio(run["rate"], run["floor_rate"])
    return [
        info(
            "end to end",
            f"events/s, bursts of {run['chunk']} ({where})",
            round(run["rate"], 2),
            "events/s",
        ),
        at_least("end to end", name, value, 0.8)
        if judged
        else info("end to end", name, value, "×"),
    ]


def door_figures(doors: dict, clicks: dict) -> list[Figure]:
    """Return accept latency against the bare endpoint, and the click ack against Slack's 3 s."""
    return [*_webhook_figures(doors["runs"]), *_ack_figures(doors["runs"], clicks)]


def _webhook_figures(r: dict) -> list[Figure]:
    """Return /hooks/training against the bare endpoint: fixed rate, then saturation."""
    bare, hooks = r["bare_open"], r["hooks_open"]
    p99_ratio = ratio(hooks["p99_ms"], bare["p99_ms"])
    return [
        info("front doors", f"bare p50 / p99 at {bare['rate']:.0f} req/s", _pair(bare), "ms"),
        info(
            "front doors",
            f"/hooks/training p50 / p99 at {hooks['rate']:.0f} req/s",
            _pair(hooks),
            "ms",
        ),
        at_most("front doors", "/hooks/training p99 / bare p99 (fixed rate)", p99_ratio, 2.0),
        info(
            "front doors", "bare saturation (8 threads): req/s, p50 / p99", _load(r["bare_closed"])
        ),
        info(
            "front doors", "/hooks/training saturation: req/s, p50 / p99", _load(r["hooks_closed"])
        ),
        info("front doors", "/hooks/training saturation req/s / bare", _rate_ratio(r), "×"),
        info("front doors", "/hooks/training p99 / bare p99 (saturation)", _p99_ratio(r), "×"),
    ]


def _ack_figures(r: dict, clicks: dict) -> list[Figure]:
    """Return the Approve click's answer time with 20 clickers at once, and its baselines."""
    con, single, bare = clicks["concurrent"], clicks["single"], clicks["bare_concurrent"]
    failed = sum(
        n
        for run in [*r.values(), *clicks.values()]
        for code, n in run["statuses"].items()
        if int(code) // 100 != 2
    )
    return [
        info("front doors", "answers other than 2xx, all front-door runs", failed),
        info(
            "front doors",
            f"Slack ack p50, 20 concurrent clickers ({con['n']} clicks)",
            con["p50_ms"],
            "ms",
        ),
        at_most(
            "front doors",
            "Slack ack p99, 20 concurrent clickers",
            con["p99_ms"],
            ACK_TARGET_MS,
            "ms",
        ),
        info("front doors", "Slack ack p99 as a share of the 3 s deadline", _share(con), "%"),
        info("front doors", "bare endpoint, same 20-at-once rounds: p50 / p99", _pair(bare), "ms"),
        info("front doors", "Slack ack p50, one click at a time", single["p50_ms"], "ms"),
    ]


def _pair(run: dict) -> str:
    return f"{run['p50_ms']} / {run['p99_ms']}"


def _load(run: dict) -> str:
    return f"{run['rate']:.0f}, {run['p50_ms']} / {run['p99_ms']} ms"


def _rate_ratio(r: dict) -> float:
    return ratio(r["hooks_closed"]["rate"], r["bare_closed"]["rate"])


def _p99_ratio(r: dict) -> float:
    return ratio(r["hooks_closed"]["p99_ms"], r["bare_closed"]["p99_ms"])


def _share(run: dict) -> float:
    return round(100 * run["p99_ms"] / SLACK_DEADLINE_MS, 1)


def footprint_figures(data: dict) -> list[Figure]:
    """Return memory after start and after load, start-up times, and the MLflow import check."""
    return [*_service_memory(data), *_worker_memories(data), *_startups(data), *_imports(data)]


def _service_memory(data: dict) -> list[Figure]:
    """Return the gunicorn services' memory, per worker process and master + workers."""
    doors, clicks = data["doors"], data["clicks"]
    accepted = doors["runs"]["hooks_open"]["n"] + doors["runs"]["hooks_closed"]["n"]
    clicked = clicks["concurrent"]["n"] + clicks["single"]["n"]
    out = []
    for name, when, mem in (
        ("webhooks", "after start", doors["rss_start"]["webhooks"]),
        ("webhooks", f"after {accepted} events", doors["rss_after"]["webhooks"]),
        ("bot", "after start", data["rss_start"]["bot"]),
        ("bot", f"after {clicked} clicks", data["rss_after"]["bot"]),
    ):
        worker, total = mem["max_child_rss_mb"], mem["total_rss_mb"]
        out.append(
            below(
                "footprint",
                f"{name} RSS per gunicorn worker (largest), {when}",
                worker,
                GUNICORN_RSS_MB,
                "MB",
            )
        )
        out.append(
            below(
                "footprint", f"{name} RSS master + 2 workers, {when}", total, GUNICORN_RSS_MB, "MB"
            )
        )
    return out


def _worker_memories(data: dict) -> list[Figure]:
    """Return the worker's memory after start (each concurrency) and after its load."""
    out = []
    for c, run in data["pipeline"].items():
        out += _worker_memory(f"--concurrency {c}, after start", run["rss_start"])
    done = data["worker_handled"]
    when = f"--concurrency 2, after {done['events']} events and {done['clicks']} clicks"
    return out + _worker_memory(when, data["rss_after"]["worker"])


def _worker_memory(when: str, mem: dict) -> list[Figure]:
    return [
        below(
            "footprint",
            f"worker RSS main + pool (total), {when}",
            mem["total_rss_mb"],
            WORKER_RSS_MB,
            "MB",
        ),
        below(
            "footprint",
            f"worker RSS largest process, {when}",
            mem["max_rss_mb"],
            WORKER_RSS_MB,
            "MB",
        ),
        info("footprint", f"worker PSS total, {when}", mem["total_pss_mb"], "MB"),
    ]


def _startups(data: dict) -> list[Figure]:
    """Return start-up times: the served apps against the target, the worker for information."""
    out = []
    for name in ("webhooks", "bot"):
        times = data["start_s"][name]
        label = f"{name} start-up (gunicorn -w 2, to /healthz), median of {len(times)}"
        out.append(below("footprint", label, round(median(times), 2), START_S, "s"))
    for c, run in data["pipeline"].items():
        label = f"worker start-up (--concurrency {c}, to 'ready')"
        out.append(info("footprint", label, round(run["start_s"], 2), "s"))
    return out


def _imports(data: dict) -> list[Figure]:
    """Return whether each front door loads mlflow (it should not)."""
    return [
        Figure("footprint", f"`{name}` imports mlflow", loaded, "", "no", not loaded)
        for name, loaded in data["imports_mlflow"].items()
    ]


def growth_figures(growth: dict) -> list[Figure]:
    """Return per-event time against existing versions, and the largest case over the smallest."""
    sizes = sorted(growth)
    first, last = sizes[0], sizes[-1]
    out = [
        lat("growth", f"end to end p50 with {_versions(n)}", growth[n]["latencies"]) for n in sizes
    ]
    out += [
        lat("growth", f"floor p50 with {_versions(n)}", growth[n]["floor_latencies"]) for n in sizes
    ]
    out += [
        lat("growth", f"minimal floor p50 with {_versions(n)}", growth[n]["minimal_latencies"])
        for n in sizes
    ]
    e2e, base, least = (
        ratio(ms(growth[last][key], 50), ms(growth[first][key], 50))
        for key in ("latencies", "floor_latencies", "minimal_latencies")
    )
    out.append(at_most("growth", f"end to end p50, {_versions(last)} / {first}", e2e, 1.5))
    out.append(info("growth", f"floor p50, {_versions(last)} / {first}", base, "×"))
    out.append(info("growth", f"minimal floor p50, {_versions(last)} / {first}", least, "×"))
    out.append(
        at_most(
            "growth",
            "end to end growth / minimal floor growth (the same registry)",
            ratio(e2e, least),
            1.1,
        )
    )
    return out


def call_figures(calls: dict) -> list[Figure]:
    """Return MLflow requests per event: the worker's path, the floor's, the minimal floor's."""
    worker, floor, minimal = (mlflow_calls(calls[k]) for k in ("worker", "floor", "minimal"))
    return [
        at_most("calls", "worker path: MLflow requests per event", worker, 14, ""),
        info("calls", "floor: MLflow requests per event", floor),
        info("calls", "minimal floor: MLflow requests per event", minimal),
        info("calls", "worker path: Slack requests per event", _slack_calls(calls["worker"])),
    ]


def mlflow_calls(tally: dict) -> float:
    """Return a tally's MLflow requests per event."""
    return round(
        sum(r["per_event"] for r in tally["by_endpoint"] if r["call"].startswith("mlflow ")), 2
    )


def _slack_calls(tally: dict) -> float:
    return round(
        sum(r["per_event"] for r in tally["by_endpoint"] if r["call"].startswith("slack ")), 2
    )


def _versions(n: int) -> str:
    return f"{n} existing version{'s' if n != 1 else ''}"


def all_figures(data: dict) -> list[Figure]:
    """Return every figure, section by section."""
    return [
        *floor_figures(data["pipeline"]),
        *pipeline_figures(data["pipeline"]),
        *door_figures(data["doors"], data["clicks"]),
        *footprint_figures(data),
        *growth_figures(data["growth"]),
        *call_figures(data["calls"]),
        *recovery_figures(data["recovery"]),
    ]


METHOD = """\
One machine ({cpus} cores) runs everything: the MLflow server (`mlflow server`, SQLite, 1
worker), Redis, the services, the Slack double and the load generator, while others may use it
too. Absolute times drift; the ratios compare work measured interleaved on the same stack.

Runs are pre-logged before each batch is timed: one run per event, each with its own logged
model named `model` (a copy of one tiny sklearn model, uploaded as `mlflow.sklearn.log_model`
would), each batch in its own experiment. Every batch of events goes to one registered model of
its own (one model per batch, except the two-model throughput pass below); the floor works on a
twin model.

Floor: per event, a plain `MlflowClient` script searches versions for the run, reads the run's
logged model from its outputs, calls `create_model_version(source=models:/<id>)`, polls until
READY, transitions to Staging, sets the `staging` alias and sets 6 tags.

Minimal floor: only what the job needs per event, in the fewest requests a plain `MlflowClient`
script can make: search versions for the run, read the run (its logged model; what the notice
shows), `create_model_version` with the request's tags (READY in its answer), transition to
Staging, set the `staging` alias, set 2 tags, read the Production version by its alias (and its
run, when there is one). Its writes go to the REST endpoints MlflowClient calls after checking
that the model is not a prompt (that check, a GET of the registered model, is skipped), as the
worker's gateway does. It runs beside the floor, on a model of its own.

Calls: requests per event counted in this process (MLflow's `rest_utils.http_request`, Slack's
`WebClient.api_call`) over {profile} events each: the worker's own code path
(`registry.flows.lifecycle.stage_training_event` with the worker's services), the floor
and the minimal floor, each on a registered model that already exists.

End to end: a signed training event POSTed to webhooks (gunicorn -w 2) until the Staging
notice's `chat.postMessage` reaches the Slack double (the double's receive time). A worker's
first events (2 per pool process) are sent before timing and reported as cold. The worker's last
tag writes come after the notice: they are not in the latency, but they are in the throughput.

Interleaving: latency comes from events one at a time, alternating one floor event, one minimal
floor event and one end-to-end event (each after its notice), {pairs} of each per worker
configuration. Throughput comes from chunks of {chunk} events, alternating a floor chunk (split
over N warm spawned processes) and an end-to-end burst (the chunk sent at once); events/s =
events / (first send to last notice), over all chunks. The floor's processes each work on a
registered model of their own: two plain clients setting one model's alias at once fail in
MLflow (UNIQUE constraint failed: registered_model_aliases), which the worker avoids with its
per-model lock. That lock also serialises one model's events, so with --concurrency 2 the bursts
run twice: on one model (the batch rule, reported) and alternating between two models (like for
like with the floor: the target is checked there).

Front doors: a second webhooks instance queues into a Redis database no worker consumes; each
request is signed with a fresh webhook-id. Fixed rate = open loop ({fixed} requests from a
32-thread pool, largest scheduling lag {lag} ms); saturation = 8 threads back to back. The bare
endpoint (`bench/bare.py`) runs under the same gunicorn command. Answer times are measured at
the client.

Slack ack: each round, 20 approvers click Approve on the same staged version at once (a barrier
releases 20 threads); the HTTP answer time of each signed block_actions request. The pipeline's
worker (--concurrency 2) is running and takes the approvals meanwhile.

Memory: VmRSS from /proc/<pid>/status, and PSS from smaps_rollup (the worker's pool shares pages
with its parent). Webhooks 'after' is the front-door instance after the fixed-rate and
saturation runs ({queued} events queued); the worker 'after' is the --concurrency 2 worker after
the {events} events it staged (warm-up, latency, throughput, growth) and the approval tasks of
{clicks} clicks. The targets are checked per process and for the whole service (master +
workers, main + pool).

Start-up: process start to the first /healthz answer (gunicorn: master and worker boot plus the
app factory), or to Celery's 'ready' log line.

Growth: a registered model first gets N versions (create_model_version on one logged model's
source, 4 threads, no stage); then events go one at a time, alternating with floor and minimal floor
events on twin models that hold the same N versions. The --concurrency 2 worker is running.
source, 4 threads, no stage); then events go one at a time, alternating with floor events on a
twin model that holds the same N versions. The --concurrency 2 worker is running.

Recovery: each trial starts a worker (--concurrency 2) in a process group of its own, sends
{recovery_events} training events of one new model at once, and as soon as the worker holds one
unacknowledged sends SIGKILL to the whole group (main process and pool: a lost machine), then
starts the worker again at once. The figure is the time from the kill to the last of the
events' notices that had not been posted before it; the events the dead worker held come back
once their visibility lease (VISIBILITY_TIMEOUT, {visibility} s) has gone unrenewed, at the next
restore scan (a quick run has none: `python -m bench recovery --quick` runs one). The target
is SPEC 8's bound: a dead worker's work done within 2 minutes of a
worker running again; it is given for information.
"""
QUICK_NOTE = (
    "QUICK RUN (`--quick`): a harness check with few events and short rates, not a measurement."
)


def notes(data: dict, quick: bool) -> list[str]:
    """Say how each figure was measured, one paragraph per note."""
    doors, pipe = data["doors"], data["pipeline"]
    text = METHOD.format(
        cpus=data.get("cpus") or os.cpu_count(),
        pairs=len(pipe[1]["latencies"]),
        chunk=pipe[1]["chunk"],
        fixed=doors["runs"]["hooks_open"]["n"],
        lag=doors["runs"]["hooks_open"]["lag_max_ms"],
        queued=doors["queued_events"],
        events=data["worker_handled"]["events"],
        clicks=data["worker_handled"]["clicks"],
        profile=data["calls"]["worker"]["events"],
        recovery_events=RECOVERY_EVENTS,
        visibility=VISIBILITY_TIMEOUT,
    )
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return [QUICK_NOTE, *paragraphs] if quick else paragraphs
