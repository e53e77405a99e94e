"""`python -m bench doors`: the front doors alone (webhooks and the Slack ack), with profiles."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from datetime import date

from bench import profile
from bench.bare import create_app as create_bare_app
from bench.figures import door_figures
from bench.load import click_request, front_door_request
from bench.misses import _cprofile_lines, _cum_ms
from bench.report import table, write
from bench.scenarios import QUICK, Plan, clicks, doors, say
from bench.stack import CLICKERS, FRONT_DB, REPO, Bench, stop

MODEL = "bench-doors"  # the clicks name versions of a model no worker ever sees
METHOD = """\
Front doors alone, on one machine ({cpus} cores) shared with others. No worker runs: the bot and
a webhooks instance queue into a Redis database nobody consumes. Fixed rate = open loop
({fixed} requests from a 32-thread pool, largest scheduling lag {lag} ms); saturation = 8
threads back to back. The bare endpoint (`bench/bare.py`) runs under the same gunicorn command
(`-w 2`, sync workers) as both services. Slack ack: each round, 20 approvers click Approve on the
same version at once (a barrier releases 20 threads); the bare endpoint gets the same 20
requests first. Answer times are measured at the client. The profiles run each door's app in
this process (Flask test client, cProfile on), so they price its own code, not the server's."""


def run_doors(quick: bool) -> int:
    """Measure and profile both front doors; write and print the results."""
    plan, suffix = (QUICK, "-doors-quick") if quick else (Plan(), "-doors")
    started, day = time.monotonic(), date.today().isoformat()
    bench = Bench.open()
    try:
        data = measure(bench, plan)
        data["profiles"], profile_md = door_profiles(bench)
    finally:
        bench.close()
    data |= {"plan": asdict(plan), "day": day, "bench_seconds": round(time.monotonic() - started)}
    figures = door_figures(data["doors"], data["clicks"])
    lines = [" ".join(METHOD.format(**_method_facts(data)).split())]
    paths = write(day, suffix, data, figures, lines, profile_md)
    print(table(figures))
    say(
        f"done in {data['bench_seconds']} s; wrote "
        + ", ".join(str(p.relative_to(REPO)) for p in paths)
    )
    return 0


def measure(bench: Bench, plan: Plan) -> dict:
    """Run the click rounds, then the webhooks load, beside the bare endpoint."""
    bot = bench.gunicorn("bot", "bot:create_wsgi_app()", FRONT_DB)
    bare = bench.gunicorn("bare", "bench.bare:create_app()", FRONT_DB)
    try:
        clicked = clicks(bench, plan, bot, bare, MODEL)
    finally:
        stop(bot)
    return {"clicks": clicked, "doors": doors(bench, plan, bare)}  # doors stops `bare`


def door_profiles(bench: Bench) -> tuple[dict, list[str]]:
    """Profile /hooks/training and an Approve click in this process, against the bare app."""
    hooks_reqs = [front_door_request("http://x") for _ in range(300)]
    hooks = profile.profile_wsgi(profile.webhooks_app(bench), hooks_reqs)
    bare = profile.profile_wsgi(create_bare_app(), hooks_reqs)
    click_reqs = [
        click_request("http://x", CLICKERS[i % 20], MODEL, "1", slack_url=bench.slack.url)
        for i in range(100)
    ]
    ack = profile.profile_wsgi(profile.bot_app(bench), click_reqs)
    bench.redis(FRONT_DB).flushdb()
    lead = (
        f"/hooks/training takes {hooks['ms_per_request']} ms per request in this process and the "
        f"bare endpoint {bare['ms_per_request']} ms; enqueueing (`Producer.send`) is "
        f"{_cum_ms(hooks, 'send (registry/queue.py')} ms of it."
    )
    text = [
        "### hooks",
        "",
        lead,
        "",
        *_cprofile_lines(hooks, "POST /hooks/training"),
        "### ack",
        "",
        *_cprofile_lines(ack, "POST /slack/events (Approve)"),
    ]
    return {"hooks": hooks, "bare": bare, "ack": ack}, text


def _method_facts(data: dict) -> dict:
    fixed = data["doors"]["runs"]["hooks_open"]
    return {"cpus": os.cpu_count(), "fixed": fixed["n"], "lag": fixed["lag_max_ms"]}
