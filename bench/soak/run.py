"""One soak: start the stack, send the load under chaos, settle, check, and count."""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

from bench.prelog import LoggedRun, log_runs, save_model
from bench.soak.chaos import Chaos, ChaosLog, schedule
from bench.soak.check import LIFECYCLE, Findings, check, unresolved
from bench.soak.drive import ClickDriver, EventDriver, Ledger
from bench.soak.slack import SlackSide
from bench.soak.stack import SoakStack

log = logging.getLogger(__name__)

MUTED_CHANNEL = "CMUTED"  # the channel the bot was never invited to

REDELIVERED = "redelivered: the worker that held this task died"
RESENT = "queued again: a task lost between the queue and a worker"


@dataclass(frozen=True)
class Plan:
    """How big a soak is."""

    events: int = 300
    clicks: int = 150
    kills: int = 10
    seconds: float = 600.0  # the drive, over which events, clicks and chaos are spread
    kills_within: float = 0.9  # the kills fall in this first part of the drive
    calm_events: int = 30  # sent first, with no chaos: redeliveries under normal load
    models: int = 5
    slack_faults: int = 40
    redis_restart: bool = True
    mlflow_restart: bool = True
    # MLflow down this long while events and clicks keep coming: longer than the six tries
    # (about two minutes) tasks once had before they dropped their work.
    mlflow_outage: float = 300.0
    settle_seconds: float = 600.0
    sweep_interval: int = 30
    seed: int = 7  # the chaos schedule, the faults and the clicks; a finding replays with it
    # Every so many events go to a model whose channel the bot was never invited to: each
    # post there is refused (not_in_channel). Its versions must wait without a notice, and
    # the other models' work must not wait for it.
    muted_every: int = 10


# The variant `make test` runs: kills early, so their work is back well within the run, and
# no MLflow restart (it may run on a server the tests share; `make soak` restarts its own).
QUICK = Plan(
    events=20,
    clicks=12,
    kills=2,
    seconds=30.0,
    kills_within=0.6,
    calm_events=0,
    slack_faults=6,
    mlflow_restart=False,
    mlflow_outage=0.0,
    settle_seconds=150.0,
)


@dataclass
class Result:
    """What one soak did and found."""

    plan: Plan
    ledger: Ledger
    chaos: ChaosLog
    findings: Findings
    slack_faults: dict[int, int] = field(default_factory=dict)  # status -> answers
    calm_deliveries: int = 0
    calm_redeliveries: int = 0
    redeliveries: int = 0
    resent: int = 0  # taken off the queue by a worker killed before it held them
    settle_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings.problems() and not self.chaos.errors


def soak(plan: Plan, *, mlflow_url: str = "", keep: bool = False) -> Result:
    """Run one soak on a stack of its own (on the MLflow server at `mlflow_url` if given, which
    is then never restarted); stop everything it started, whatever happens."""
    if mlflow_url:
        plan = replace(plan, mlflow_restart=False, mlflow_outage=0.0)
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]  # names of their own, on a shared MLflow server too
    muted = f"soak-{run}-muted"
    stack = SoakStack.open(plan.sweep_interval, mlflow_url, policy=muted_policy(muted))
    stack.slack.leave(MUTED_CHANNEL)
    ok = False
    try:
        result = _soak(stack, plan, run, muted)
        result.seconds = time.monotonic() - started
        ok = result.ok
        return result
    finally:
        stack.close(keep=keep or not ok)
        if keep or not ok:
            log.warning("soak logs kept in %s", stack.workdir)


def muted_policy(model: str) -> str:
    """Return the soak's policy: `model` notices in a channel the bot is not in."""
    return f"models:\n  {model}:\n    channel: {MUTED_CHANNEL}\n"


def _soak(stack: SoakStack, plan: Plan, run: str, muted: str) -> Result:
    models = [f"soak-{run}-m{i}" for i in range(plan.models)]
    runs = _runs(stack, models, plan.events, f"soak-{run}")
    if plan.muted_every:
        runs = [(muted if i % plan.muted_every == 5 else m, r) for i, (m, r) in enumerate(runs)]
    ledger, side = Ledger(), SlackSide(stack.bot_url, stack.slack)
    events = EventDriver(stack.webhooks_url, ledger)
    clicks = ClickDriver(side, stack.slack, ledger, seed=plan.seed)
    stop = threading.Event()
    calm = _calm(stack, ledger, side, events, runs[: plan.calm_events], plan)
    chaos = Chaos(
        stack,
        schedule(
            plan.seconds,
            plan.kills,
            plan.slack_faults,
            kills_within=plan.kills_within,
            redis=plan.redis_restart,
            mlflow=plan.mlflow_restart,
            outage=plan.mlflow_outage,
            seed=plan.seed,
        ),
        seed=plan.seed,
    )
    chaos.start()
    clicking = threading.Thread(
        target=clicks.click_all, args=(plan.clicks, plan.seconds, stop), daemon=True
    )
    clicking.start()
    events.send_all(runs[plan.calm_events :], plan.seconds, stop)
    clicking.join()
    chaos.join(timeout=plan.seconds + 600)
    chaos.stop()
    settled = time.monotonic()
    findings = _settle(stack, ledger, side, plan.settle_seconds, resume_beat=False, muted=muted)
    events.close()
    clicks.close()
    return Result(
        plan=plan,
        ledger=ledger,
        chaos=chaos.done,
        findings=findings,
        slack_faults=_faults_answered(stack),
        calm_deliveries=calm[0],
        calm_redeliveries=calm[1],
        redeliveries=stack.services["worker"].log().count(REDELIVERED),
        resent=stack.services["worker"].log().count(RESENT),
        settle_seconds=time.monotonic() - settled,
    )


def _runs(
    stack: SoakStack, models: list[str], count: int, experiment: str
) -> list[tuple[str, LoggedRun]]:
    """Log one run per event, the models in turn."""
    template = save_model(stack.workdir)
    runs = log_runs(stack.mlflow_url, experiment, count, template)
    return [(models[i % len(models)], run) for i, run in enumerate(runs)]


def _calm(stack, ledger, side, events, runs, plan) -> tuple[int, int]:
    """Send the calm events with no chaos and wait for them; return (deliveries, redeliveries)."""
    if not runs:
        return 0, 0
    events.send_all(runs, plan.calm_events * 0.5, threading.Event())
    _settle(stack, ledger, side, plan.settle_seconds, muted="")
    worker_log = stack.services["worker"].log()
    return worker_log.count("] received"), worker_log.count(REDELIVERED)


def _settle(
    stack: SoakStack,
    ledger: Ledger,
    side: SlackSide,
    timeout: float,
    *,
    resume_beat: bool = True,
    muted: str,
) -> Findings:
    """Wait until nothing is lost and the queue is empty (beat paused), or `timeout`."""
    deadline = time.monotonic() + timeout
    stack.services["beat"].stop()  # its sweeps would keep the queue from ever being empty
    try:
        while True:
            found = check(stack, ledger, side, muted=muted)
            if not list(unresolved(found)) or time.monotonic() > deadline:
                return found
            time.sleep(3.0)
    finally:
        if resume_beat:
            stack.start("beat")


def _faults_answered(stack: SoakStack) -> dict[int, int]:
    """Count the Slack calls the double answered 429 or 500."""
    statuses = [c.status for c in stack.slack.calls() if c.status in (429, 500)]
    return {status: statuses.count(status) for status in (429, 500)}


def figures(result: Result) -> dict:
    """Return the soak's figures, as numbers."""
    ledger, chaos, found = result.ledger, result.chaos, result.findings
    waits = sorted(found.notice_seconds) or [0.0]
    return {
        "events": len(ledger.accepted()),
        "posts": ledger.sends,
        "clicks": len(ledger.clicks),
        "clicks_by_kind": dict(sorted(Counter(c.kind for c in ledger.clicks).items())),
        "kills": len(chaos.kills),
        "held_at_kills": sum(k.held for k in chaos.kills),
        "redis_restarts": chaos.redis_restarts,
        "mlflow_restarts": chaos.mlflow_restarts,
        "mlflow_down_s": round(chaos.mlflow_down_seconds),
        "slack_429": result.slack_faults.get(429, 0),
        "slack_500": result.slack_faults.get(500, 0),
        "recorded": {kind: found.recorded[kind] for kind in LIFECYCLE},
        "muted_versions_waiting": found.muted_waiting,
        "duplicates": len(found.duplicates),
        "lost": len(found.lost),
        "other_findings": len(found.problems()) - len(found.duplicates) - len(found.lost),
        "notice_longest_s": round(waits[-1], 1),
        "notice_median_s": round(statistics.median(waits), 1),
        "calm_deliveries": result.calm_deliveries,
        "calm_redeliveries": result.calm_redeliveries,
        "redeliveries": result.redeliveries,
        "resent_from_journal": result.resent,
        "seed": result.plan.seed,
        "seconds": round(result.seconds),
        "settle_seconds": round(result.settle_seconds),
    }


def table(result: Result) -> str:
    """Render the soak's figures as a Markdown table."""
    f = figures(result)
    kinds = ", ".join(f"{k} {n}" for k, n in f["clicks_by_kind"].items())
    rows = [
        ("events accepted (POSTs sent)", f"{f['events']} ({f['posts']})"),
        ("clicks", f"{f['clicks']} ({kinds})"),
        ("whole-worker kills", f"{f['kills']} ({f['held_at_kills']} messages held at the kills)"),
        ("restarts", f"Redis {f['redis_restarts']}, MLflow {f['mlflow_restarts']}"),
        ("MLflow down, while events and clicks came", f"{f['mlflow_down_s']} s"),
        ("Slack 429 / 500 injected", f"{f['slack_429']} / {f['slack_500']}"),
        ("changes recorded", ", ".join(f"{k} {n}" for k, n in f["recorded"].items())),
        (
            "events for a model whose channel refuses every post: versions waiting unnoticed",
            str(f["muted_versions_waiting"]),
        ),
        ("duplicates found", str(f["duplicates"])),
        ("lost", str(f["lost"])),
        ("other findings", str(f["other_findings"])),
        (
            "acceptance → notice, longest (median)",
            f"{f['notice_longest_s']} s ({f['notice_median_s']} s)",
        ),
        (
            "redeliveries: normal load / whole soak",
            f"{f['calm_redeliveries']} of {f['calm_deliveries']} tasks / {f['redeliveries']}",
        ),
        ("lost by a killed worker, queued again from the journal", str(f["resent_from_journal"])),
        ("soak time (settling)", f"{f['seconds']} s ({f['settle_seconds']} s)"),
        ("seed", str(f["seed"])),
    ]
    lines = ["| figure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)
