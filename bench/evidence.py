"""Evidence: what the evidence in a notice's thread (SPEC 15) costs the notice itself.

One worker (--concurrency 2) and one policy file: the model `ev-off` has `evidence: null`,
the model `ev-on` the default evidence. Every run logs a model with a three-column
signature and a requirements.txt, and a confusion-matrix PNG; both models have a
Production to compare with. Events go one a second (a pipeline's pace, never a burst) in
blocks ordered off, on, on, off (twice), and each block waits for the worker to be idle
(every evidence shown) before the next: event → notice is timed for each event, beside
when its evidence was all in the thread.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from bench.load import post, training_request
from bench.pipeline import NoticeWatch
from bench.prelog import LoggedRun, log_run
from bench.report import Figure, ms
from bench.stack import WORKER_DB, Bench, stop

METHOD = (
    "Evidence: one worker (--concurrency 2), a policy file giving `ev-off` `evidence: null`; "
    "every run logs a model with a three-column signature, a requirements.txt and a "
    "confusion-matrix PNG, and both models have a Production to compare with. Events go one a "
    "second in blocks of ten, ordered off, on, on, off (twice, so that a load drifting "
    "during the run weighs on both alike), each block waiting for the worker to be "
    "idle (all evidence shown) before the next. Event → notice is timed at the Slack double "
    "(the notice's chat.postMessage); the evidence's time runs from the notice to its "
    "thread's last files.completeUploadExternal."
)

ON, OFF, WARM = "ev-on", "ev-off", "ev-warm"
WARM_EVENTS = 4  # untimed, first: both pool processes import and connect what they use
POLICY = f"models:\n  {OFF}:\n    evidence: null\n"
PACE = 1.0  # seconds between events
NOTICE_TIMEOUT = 60.0
BUDGET = 1.10  # the notice's p50 and p95 with evidence within 10% of those without


@dataclass
class EvidencePlan:
    """How many events per block, and how many blocks of each kind (alternating)."""

    per_block: int = 10
    rounds: int = 2  # each round is four blocks: off, on, on, off


QUICK_EVIDENCE = EvidencePlan(per_block=3, rounds=1)
ROUND = (OFF, ON, ON, OFF)  # ABBA: a load that drifts during the run weighs on both alike


@dataclass
class Timed:
    """What one kind of event measured."""

    latencies: list[float] = field(default_factory=list)  # event → notice, seconds
    shown: list[float] = field(default_factory=list)  # notice → all evidence in the thread


def run_evidence(plan: EvidencePlan, say) -> dict:
    """Start the stack, send the blocks, return both kinds' timings."""
    bench = Bench.open()
    policy = bench.workdir / "policy.yaml"
    policy.write_text(POLICY)
    bench.extra_env["POLICY_FILE"] = str(policy)
    watch = NoticeWatch(bench.slack)
    try:
        template = save_template(bench.workdir)
        picture = confusion_matrix_png()
        count = plan.per_block * plan.rounds * 2
        # Both models alike but for the policy: each has a Production (the notice compares).
        runs = {m: log_runs(bench, m, count + 1, template, picture) for m in (ON, OFF)}
        warm = log_runs(bench, WARM, WARM_EVENTS, template, picture)
        for model in (ON, OFF):
            make_production(bench, model, runs[model].pop(0))
        hooks = bench.gunicorn("webhooks", "webhooks:create_app()", WORKER_DB)
        worker = bench.worker(2)
        send_block(bench, watch, hooks.url, WARM, warm, Timed())
        timed = {ON: Timed(), OFF: Timed()}
        left = {m: list(r) for m, r in runs.items()}
        for number, model in enumerate(ROUND * plan.rounds, 1):
            chunk, left[model] = left[model][: plan.per_block], left[model][plan.per_block :]
            send_block(bench, watch, hooks.url, model, chunk, timed[model])
            say(f"evidence: block {number}/{len(ROUND) * plan.rounds} ({model}) done")
        stop(worker)
    finally:
        watch.close()
        bench.close()
    return {m: {"latencies": t.latencies, "shown": t.shown} for m, t in timed.items()}


def send_block(
    bench: Bench, watch: NoticeWatch, hooks_url: str, model: str, runs: list[LoggedRun], out: Timed
) -> None:
    """Send one event a PACE, time each to its notice, then wait for the evidence."""
    sent: dict[str, float] = {}
    for run in runs:
        started = time.time()
        before = watch.count(model)
        sent[run.run_id] = started
        _, status = post(training_request(hooks_url, model, run.run_id))
        if status != 202:
            raise RuntimeError(f"training event answered {status}")
        watch.wait(model, before + 1, NOTICE_TIMEOUT)
        time.sleep(max(0.0, started + PACE - time.time()))
    versions = {mv.run_id: mv for mv in bench.client.search_model_versions(f"name = '{model}'")}
    notices = watch.times(model)
    for run_id, at in sent.items():
        out.latencies.append(notices[str(versions[run_id].version)] - at)
    if model != OFF:
        wanted = [str(versions[r].version) for r in sent]
        out.shown += wait_shown(bench, model, wanted, notices)


def wait_shown(bench: Bench, model: str, versions: list[str], notices: dict) -> list[float]:
    """Wait until every version's evidence is shown; return notice → last upload, each."""
    deadline = time.monotonic() + NOTICE_TIMEOUT
    while time.monotonic() < deadline:
        tags = {v: bench.client.get_model_version(model, v).tags for v in versions}
        if all(t.get("registry_bot.evidence") == "done" for t in tags.values()):
            break
        time.sleep(0.2)
    else:
        raise TimeoutError(f"evidence not shown for {model} {versions}")
    shares = bench.slack.calls("files.completeUploadExternal")
    shown = []
    for version, t in tags.items():
        ts = t["registry_bot.notice_ts"]
        last = max(c.at for c in shares if c.params.get("thread_ts") == ts)
        shown.append(last - notices[version])
    return shown


def save_template(workdir: Path) -> Path:
    """Save one tiny real model with a three-column signature and its requirements."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.dummy import DummyRegressor

    path = workdir / "evidence-template"
    frame = pd.DataFrame({"age": [1.5], "plan": ["basic"], "visits": [3]})
    model = DummyRegressor(strategy="constant", constant=1.0).fit(frame[["age"]], [1.0])
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(frame, [1.0]),
        pip_requirements=["scikit-learn", "pandas==2.2.3"],
    )
    return path


def confusion_matrix_png() -> bytes:
    """Draw a small confusion matrix, as a training script would log one."""
    from matplotlib.figure import Figure as Drawing

    fig = Drawing(figsize=(3, 3), dpi=100)
    fig.add_subplot().imshow([[50, 3], [5, 42]], cmap="Blues")
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def log_runs(
    bench: Bench, model: str, count: int, template: Path, picture: bytes
) -> list[LoggedRun]:
    """Log `count` runs, each with the model and `confusion_matrix.png`."""
    client = bench.client
    experiment_id = client.create_experiment(f"bench-evidence-{model}")
    client.create_registered_model(model)
    png = bench.workdir / "confusion_matrix.png"
    png.write_bytes(picture)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: log_run(client, experiment_id, template, png), range(count)))


def make_production(bench: Bench, model: str, run: LoggedRun) -> None:
    """Register the run's model as `model`'s Production, by hand, as a past promotion left it."""
    client = bench.client
    mv = client.create_model_version(model, run.source, run_id=run.run_id, model_id=run.model_id)
    client.transition_model_version_stage(model, mv.version, "Production")
    client.set_registered_model_alias(model, "production", mv.version)


def evidence_figures(found: dict) -> list[Figure]:
    """Return event → notice p50 and p95 with evidence on and off, and the evidence's own
    time after its notice; the notice's figures with evidence are held within 10%."""
    on, off = found[ON], found[OFF]
    figures = []
    for q in (50, 95):
        base, with_ = ms(off["latencies"], q), ms(on["latencies"], q)
        n = len(off["latencies"])
        figures.append(Figure("evidence", f"event → notice p{q}, evidence off, n={n}", base, "ms"))
        figures.append(
            Figure(
                "evidence",
                f"event → notice p{q}, evidence on, n={len(on['latencies'])}",
                with_,
                "ms",
                f"≤ {base * BUDGET:.0f} ms (off + 10%)",
                with_ <= base * BUDGET,
            )
        )
    shown = on["shown"]
    figures.append(
        Figure("evidence", "notice → all evidence in the thread, median", ms(shown, 50), "ms")
    )
    figures.append(Figure("evidence", "... p95", ms(shown, 95), "ms"))
    figures.append(Figure("evidence", "events per kind", len(on["latencies"])))
    return figures


def summary(found: dict) -> str:
    """Return one line for the terminal."""
    on, off = found[ON]["latencies"], found[OFF]["latencies"]
    return f"event → notice median: off {median(off) * 1000:.0f} ms, on {median(on) * 1000:.0f} ms"
