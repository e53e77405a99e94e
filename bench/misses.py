"""Profile whatever missed its target, and say in markdown where the time (or memory) goes."""

from __future__ import annotations

from bench import profile
from bench.bare import create_app as create_bare_app
from bench.floor import floor_event
from bench.frontdoor import click_rounds
from bench.load import Samples, click_request, front_door_request, in_turn, post, training_request
from bench.pipeline import NoticeWatch
from bench.report import Figure, md_row, ms
from bench.scenarios import Plan, Runs, say
from bench.stack import CLICKERS, FRONT_DB, WORKER_DB, Bench, stop

ACK_EXPLAINED = """\
One click at a time the bot answers in {single} ms (p50); 20 at once, p99 {p99} ms. In this
process a click takes {cpu} ms, {sleep} ms of it in `time.sleep` (Bolt's 10 ms poll for the
listener's ack, which the bot's `AckWaitingExecutor` makes unnecessary: this should be 0).
gunicorn's sync workers (-w 2) each hold one request at a time, so 20 clicks at once queue
about 10 deep per worker: p99 ≈ 10 × the time a click holds its worker.

The same rounds again on three builds of the bot, taking turns round by round (no worker running
now: compare the rows with each other rather than with the figure above):"""
PROMPT_CHECK = (
    "MLflow's client GETs the registered model before each set-tag, transition and alias write, to "
    "check it is not a prompt (`MlflowClient._raise_if_prompt`); on the server that GET loads every"
    " version of the model. The floor makes those checks; the worker's gateway and the minimal "
    "floor call the write endpoints without them."
)
BOT_VARIANTS = (
    ("as served: gunicorn -w 2 (sync workers)", "bot:create_wsgi_app()", ()),
    (
        "gunicorn `-w 2 -k gthread --threads 10` (the sleeps overlap)",
        "bot:create_wsgi_app()",
        ("-k", "gthread", "--threads", "10"),
    ),
    (
        "Bolt `process_before_response=True` (bench/variants.py), -w 2 sync",
        "bench.variants:bot_acking_inline()",
        (),
    ),
)
STARTUP_CODE = {
    "webhooks": "import webhooks; webhooks.create_app()",
    "bot": "import bot; bot.create_wsgi_app()",
    "worker": "import worker.tasks, mlflow; from worker.tasks import services",
}


def profile_misses(
    bench: Bench, runs: Runs, plan: Plan, data: dict, figures: list[Figure]
) -> tuple[dict, list[str]]:
    """Run the profile that explains each missed group of targets; return data and markdown."""
    missed = {f.section + ": " + f.name for f in figures if f.ok is False}
    found, lines = {}, []
    for key, wanted, explain in (
        ("pipeline", ("end to end:",), _pipeline),
        ("growth", ("growth:",), _growth),
        ("hooks", ("front doors: /hooks",), _hooks),
        ("ack", ("front doors: Slack ack",), _ack),
        ("footprint", ("footprint:",), _footprint),
    ):
        hits = sorted(m for m in missed if m.startswith(wanted))
        if hits:
            say(f"profiling: {key}")
            found[key], text = _explain(explain, bench, runs, plan, data, hits)
            lines += [f"### {key}", "", "Missed: " + "; ".join(hits) + ".", "", *text, ""]
    return found, lines


def _explain(
    explain, bench: Bench, runs: Runs, plan: Plan, data: dict, hits: list[str]
) -> tuple[dict, list[str]]:
    """Run one profile; a failing profile is reported, and never costs the run its results."""
    try:
        return explain(bench, runs, plan, data, hits)
    except Exception as exc:  # noqa: BLE001 (the measurements matter more than one profile)
        say(f"profile failed: {exc!r}")
        return {"error": repr(exc)}, [f"The profile failed: `{exc!r}`."]


def _pipeline(
    bench: Bench, runs: Runs, plan: Plan, data: dict, hits: list[str]
) -> tuple[dict, list[str]]:
    """Count the worker's calls per event against the floor's, and sample the real worker."""
    tally = data.get("calls") or _tally_worker_and_floor(bench, runs, plan.profile_events)
    spied = _spy_worker(bench, runs, plan.profile_events) if profile.pyspy_binary() else {}
    base, name = (
        (tally["minimal"], "minimal floor") if "minimal" in tally else (tally["floor"], "floor")
    )
    text = [
        PROMPT_CHECK,
        "",
        *_tally_lines(tally["worker"], base, "worker path", name),
    ]
    if spied:
        text += _fold_lines(spied)
    return {"tally": tally, "pyspy": spied}, text


def _tally_worker_and_floor(bench: Bench, runs: Runs, n: int) -> dict:
    svc = profile.worker_services(bench)
    worker_runs, floor_runs = runs.log("profile-worker", n), runs.log("profile-floor", n)
    client = bench.client
    client.create_registered_model("profile-floor")
    return {
        "worker": profile.tally_events(profile.worker_event(svc, "profile-worker"), worker_runs),
        "floor": profile.tally_events(
            lambda run: floor_event(client, "profile-floor", run), floor_runs
        ),
    }


def _spy_worker(bench: Bench, runs: Runs, n: int) -> dict:
    """Sample a real worker (--concurrency 1) under py-spy while events arrive one at a time."""
    batch = runs.log("profile-pyspy", n)
    hooks = bench.gunicorn("webhooks-profile", "webhooks:create_app()", WORKER_DB)
    watch = NoticeWatch(bench.slack)

    def send() -> None:
        for i, run in enumerate(batch, 1):
            post(training_request(hooks.url, "profile-pyspy", run.run_id))
            watch.wait("profile-pyspy", i, 60)

    try:
        return profile.pyspy_worker(bench, send)
    finally:
        watch.close()
        stop(hooks)


def _growth(
    bench: Bench, runs: Runs, plan: Plan, data: dict, hits: list[str]
) -> tuple[dict, list[str]]:
    """Count the worker's calls per event on the smallest and the largest model."""
    sizes = sorted(data["growth"])
    svc, n = profile.worker_services(bench), max(3, plan.profile_events // 3)
    tally = {
        size: profile.tally_events(
            profile.worker_event(svc, f"e2e-grow-{size}"), runs.log(f"profile-grow-{size}", n)
        )
        for size in (sizes[0], sizes[-1])
    }
    grown = data["growth"]
    lead = (
        f"From {sizes[0]} to {sizes[-1]} existing versions the end-to-end p50 went from "
        f"{ms(grown[sizes[0]]['latencies'], 50)} to {ms(grown[sizes[-1]]['latencies'], 50)} ms and "
        f"the floor's from {ms(grown[sizes[0]]['floor_latencies'], 50)} to "
        f"{ms(grown[sizes[-1]]['floor_latencies'], 50)} ms (the same server, the same N versions)."
    )
    names = f"{sizes[-1]} versions", f"{sizes[0]} version(s)"
    return tally, [lead, "", *_tally_lines(tally[sizes[-1]], tally[sizes[0]], *names)]


def _hooks(
    bench: Bench, runs: Runs, plan: Plan, data: dict, hits: list[str]
) -> tuple[dict, list[str]]:
    """Profile /hooks/training in this process (cProfile), as gunicorn's workers run it."""
    reqs = [front_door_request("http://x") for _ in range(300)]
    result = profile.profile_wsgi(profile.webhooks_app(bench), reqs)
    bare = profile.profile_wsgi(create_bare_app(), reqs)
    bench.redis(FRONT_DB).flushdb()
    fixed = data["doors"]["runs"]
    rate, cost = fixed["hooks_open"]["rate"], result["ms_per_request"]
    lead = (
        f"In this process (Flask test client, cProfile on) /hooks/training takes {cost} ms per "
        f"request and the bare endpoint {bare['ms_per_request']} ms; Celery's `send_task` alone "
        f"is {_cum_ms(result, 'send_task (celery/')} ms of it. At {rate:.0f} req/s two sync "
        f"workers are busy about {rate * cost / 20:.0f}% of the time each, so the tail is mostly "
        "that service time stretched by whatever else runs on the 2 cores (the load generator "
        "among them): a request doing more work is more exposed to it (p50 "
        f"{fixed['hooks_open']['p50_ms']} vs {fixed['bare_open']['p50_ms']} ms, p99 "
        f"{fixed['hooks_open']['p99_ms']} vs {fixed['bare_open']['p99_ms']} ms)."
    )
    return {"hooks": result, "bare": bare}, [
        lead,
        "",
        *_cprofile_lines(result, "POST /hooks/training"),
    ]


def _ack(
    bench: Bench, runs: Runs, plan: Plan, data: dict, hits: list[str]
) -> tuple[dict, list[str]]:
    """Profile the Approve click in this process, and retry the rounds on threaded workers."""
    model = data["pipeline"][2]["model"]
    reqs = [
        click_request("http://x", CLICKERS[i % 20], model, "1", slack_url=bench.slack.url)
        for i in range(100)
    ]
    result = profile.profile_wsgi(profile.bot_app(bench), reqs)
    rounds = _variant_rounds(bench, plan, model)
    bench.redis(FRONT_DB).flushdb()
    single, con = data["clicks"]["single"], data["clicks"]["concurrent"]
    text = [
        ACK_EXPLAINED.format(
            single=single["p50_ms"],
            p99=con["p99_ms"],
            cpu=result["ms_per_request"],
            sleep=_own_ms(result, "<built-in method time.sleep>"),
        ),
        "",
        md_row("bot variant", "clicks", "p50 ms", "p99 ms"),
        md_row(*["---"] * 4),
        *[md_row(name, r["n"], r["p50_ms"], r["p99_ms"]) for name, r in rounds.items()],
        "",
        *_cprofile_lines(result, "POST /slack/events (Approve)"),
    ]
    return {"cprofile": result, "variant_rounds": rounds}, text


def _cum_ms(result: dict, function: str) -> float:
    """Return the cumulative time per request of one profiled function (0 when not listed)."""
    rows = result["by_cumulative"]
    return next((r["cum_ms"] for r in rows if r["function"].startswith(function)), 0.0)


def _own_ms(result: dict, function: str) -> float:
    """Return the own time per request of one profiled function (0 when it is not listed)."""
    return next((r["own_ms"] for r in result["by_own"] if r["function"].startswith(function)), 0.0)


def _variant_rounds(bench: Bench, plan: Plan, model: str) -> dict[str, dict]:
    """Run the click rounds on each build of the bot, round by round in turn (idle database)."""
    bots = {
        name: bench.gunicorn(f"bot-variant-{i}", target, FRONT_DB, extra=extra)
        for i, (name, target, extra) in enumerate(BOT_VARIANTS)
    }
    samples = {name: Samples() for name in bots}
    try:
        for version in range(1, plan.click_rounds + 1):
            for name in in_turn(list(bots), version):
                samples[name].extend(
                    click_rounds(bots[name].url, bench.slack.url, [(model, str(version))])[0]
                )
    finally:
        for bot in bots.values():
            stop(bot)
    return {name: _percentiles(s) for name, s in samples.items()}


def _percentiles(samples: Samples) -> dict:
    return {
        "n": len(samples.latencies),
        "p50_ms": ms(samples.latencies, 50),
        "p99_ms": ms(samples.latencies, 99),
    }


def _footprint(
    bench: Bench, runs: Runs, plan: Plan, data: dict, hits: list[str]
) -> tuple[dict, list[str]]:
    """Show which imports make each missed service slow to start or big in memory."""
    found, text = {}, []
    for name, code in STARTUP_CODE.items():
        if any(name in h for h in hits):
            found[name] = costs = profile.import_costs(bench, code)
            text += _import_lines(name, code, costs)
    return found, text


def _import_lines(name: str, code: str, costs: dict) -> list[str]:
    """Render one service's import costs: time per package, and what each weighs alone."""
    base = costs["rss_python_mb"]
    return [
        f"`{name}`: `{code}` leaves a fresh interpreter at {costs['rss_built_mb']} MB resident "
        f"(bare Python: {base} MB). The packages it spends most import time in (own time), and "
        "the RSS each adds alone: every module of it that the service imports, with their "
        "dependencies (so the rows overlap):",
        "",
        md_row("package", "import s (own)", "+MB alone"),
        md_row(*["---"] * 3),
        *[
            md_row(r["package"], r["seconds"], round(costs["rss_alone_mb"][r["package"]] - base, 1))
            for r in costs["import_s_by_package"]
        ],
        "",
    ]


def _tally_lines(main: dict, base: dict, main_name: str, base_name: str) -> list[str]:
    """Render two call tallies side by side, the biggest differences, and who made the calls."""
    ours, theirs = _by_name(main["by_endpoint"]), _by_name(base["by_endpoint"])
    names = list(ours) + [name for name in theirs if name not in ours]
    out = [
        f"Calls per event, counted in this process on the same code path ({main['events']} events "
        f"each): {main_name} {main['wall_ms_per_event']} ms/event with {main['calls_per_event']} "
        f"calls ({main['call_ms_per_event']} ms in them); {base_name} {base['wall_ms_per_event']} "
        f"ms/event with {base['calls_per_event']} calls ({base['call_ms_per_event']} ms). "
        f"Largest differences: {_differences(ours, theirs)}.",
        "",
        md_row(
            "call", f"{main_name}: calls/event", "ms/event", f"{base_name}: calls/event", "ms/event"
        ),
        md_row(*["---"] * 5),
        *[md_row(name, *_cells(ours.get(name)), *_cells(theirs.get(name))) for name in names],
        "",
        f"Who makes them ({main_name}; the innermost public functions of `registry/`):",
        "",
        md_row("call (caller ← its caller)", "calls/event", "ms/event"),
        md_row(*["---"] * 3),
        *[md_row(r["call"], r["per_event"], r["ms_per_event"]) for r in main["by_caller"]],
        "",
    ]
    return out


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["call"]: row for row in rows}


def _differences(ours: dict[str, dict], theirs: dict[str, dict], top: int = 3) -> str:
    """Describe the calls whose time per event differs most between two tallies."""
    zero = {"per_event": 0, "ms_per_event": 0.0}
    deltas = sorted(
        ((ours.get(n, zero), theirs.get(n, zero), n) for n in {*ours, *theirs}),
        key=lambda t: -(t[0]["ms_per_event"] - t[1]["ms_per_event"]),
    )
    return ", ".join(
        f"{name} {a['ms_per_event'] - b['ms_per_event']:+.0f} ms ({a['per_event']:g} vs "
        f"{b['per_event']:g} calls)"
        for a, b, name in deltas[:top]
    )


def _cells(row: dict | None) -> tuple[object, object]:
    return ("–", "–") if row is None else (row["per_event"], row["ms_per_event"])


def _fold_lines(spied: dict) -> list[str]:
    """Render py-spy's folded stacks of the real worker."""
    return [
        f"py-spy (wall clock, idle included, 200 Hz) on a real worker (--concurrency 1) while "
        f"events arrived one at a time: {spied['samples']} samples inside `{spied['focus']}`. "
        "Share of that time inside each core function (inclusive):",
        "",
        "| function | share |",
        "| --- | --- |",
        *[f"| {r['frame']} | {r['share']:.0%} |" for r in spied["core_inclusive"]],
        "",
        "Innermost frames (where the samples sat; `readinto` = waiting for the MLflow server):",
        "",
        "| frame | share |",
        "| --- | --- |",
        *[f"| {r['frame']} | {r['share']:.0%} |" for r in spied["leaf"]],
        "",
    ]


def _cprofile_lines(result: dict, what: str) -> list[str]:
    """Render a cProfile summary: top functions by cumulative and by own time, per request."""
    return [
        f"cProfile of {result['requests']} × {what} in this process: {result['ms_per_request']} ms "
        "per request. Top functions by cumulative time, then by own time (ms per request):",
        "",
        "| function | cumulative | own |",
        "| --- | --- | --- |",
        *[f"| {r['function']} | {r['cum_ms']} | {r['own_ms']} |" for r in result["by_cumulative"]],
        "",
        "| function | own |",
        "| --- | --- |",
        *[f"| {r['function']} | {r['own_ms']} |" for r in result["by_own"]],
        "",
    ]
