"""Run the benchmark: `python -m bench` measures, `python -m bench --quick` checks the harness."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from datetime import date

from bench.figures import QUICK_NOTE, all_figures, notes
from bench.misses import profile_misses
from bench.report import plot, table, write
from bench.scenarios import QUICK, Plan, Runs, run_all, say
from bench.stack import REPO, Bench
from bench.sweep import QUICK_SWEEP, SweepPlan, run_sweep_bench
from bench.sweep import figures as sweep_figures
from bench.sweep import notes as sweep_notes
from bench.sweep import plot as sweep_plot


def main(argv: list[str]) -> int:
    """Start the stack, run every scenario, profile the misses, write and print the results."""
    args = _parser().parse_args(argv)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run" lines
    if args.scenario == "scaleout":
        return scaleout(args.quick)
    if args.scenario == "doors":
        from bench.doors import run_doors

        return run_doors(args.quick)
    if args.scenario == "recovery":
        from bench.recovery import run_recovery

        return run_recovery(args.quick)
    if args.scenario == "sweep":
        return sweep_only(args.quick)
    if args.scenario == "evidence":
        return evidence_only(args.quick)
    if args.scenario == "gate":
        from bench.gate import run_gate

        return run_gate(args.quick)
    plan, suffix = (QUICK, "-quick") if args.quick else (Plan(), "")
    started, day = time.monotonic(), date.today().isoformat()
    _load_services_code()
    bench = Bench.open()
    try:
        runs = Runs(bench)
        data = run_all(bench, runs, plan)
        figures = all_figures(data)
        data["profiles"], profile_md = profile_misses(bench, runs, plan, data, figures)
    finally:
        bench.close()
    sweep_plan = QUICK_SWEEP if args.quick else SweepPlan()
    data["sweep"] = run_sweep_bench(sweep_plan, say)
    figures += sweep_figures(data["sweep"])
    data |= {
        "plan": asdict(plan),
        "day": day,
        "cpus": os.cpu_count(),
        "bench_seconds": round(time.monotonic() - started),
    }
    lines = notes(data, args.quick) + sweep_notes(data["sweep"], sweep_plan)
    paths = write(day, suffix, data, figures, lines, profile_md)
    paths.append(plot(day, suffix, _pipeline_series(data), _door_series(data)))
    paths.append(sweep_plot(day, suffix, data["sweep"]))
    print(table(figures))
    say(
        f"done in {data['bench_seconds']} s; wrote "
        + ", ".join(str(p.relative_to(REPO)) for p in paths)
    )
    return 0


def scaleout(quick: bool) -> int:
    """Measure the scale-out curve on the PostgreSQL stack; write and print the results."""
    from bench.scaleout import QUICK_SCALE, ScalePlan, notes, run_scaleout, scale_table
    from bench.scaleout import write_results as write_scaleout

    plan, suffix = (QUICK_SCALE, "-quick") if quick else (ScalePlan(), "")
    started, day = time.monotonic(), date.today().isoformat()
    data = run_scaleout(plan, say)
    data |= {"plan": asdict(plan), "day": day, "cpus": os.cpu_count()}
    data["bench_seconds"] = round(time.monotonic() - started)
    lines = notes(data, os.cpu_count() or 1)
    paths = write_scaleout(day, suffix, data, lines)
    print("\n".join([*scale_table(data), "", *lines]))
    say(
        f"done in {data['bench_seconds']} s; wrote "
        + ", ".join(str(p.relative_to(REPO)) for p in paths)
    )
    return 0


def sweep_only(quick: bool) -> int:
    """Measure the sweep against the registry's size alone; write and print the results."""
    plan, suffix = (QUICK_SWEEP, "-quick-sweep") if quick else (SweepPlan(), "-sweep")
    started, day = time.monotonic(), date.today().isoformat()
    data = {"sweep": run_sweep_bench(plan, say), "plan": asdict(plan), "day": day}
    data |= {"cpus": os.cpu_count(), "bench_seconds": round(time.monotonic() - started)}
    figures = sweep_figures(data["sweep"])
    lines = ([QUICK_NOTE] if quick else []) + sweep_notes(data["sweep"], plan)
    paths = write(day, suffix, data, figures, lines, [])
    paths.append(sweep_plot(day, "-quick" if quick else "", data["sweep"]))
    print(table(figures))
    say(
        f"done in {data['bench_seconds']} s; wrote "
        + ", ".join(str(p.relative_to(REPO)) for p in paths)
    )
    return 0


def evidence_only(quick: bool) -> int:
    """Measure event → notice with the evidence on and off, in one run; write and print."""
    from bench.evidence import METHOD as EVIDENCE_METHOD
    from bench.evidence import QUICK_EVIDENCE, EvidencePlan, evidence_figures, run_evidence

    plan, suffix = (QUICK_EVIDENCE, "-quick-evidence") if quick else (EvidencePlan(), "-evidence")
    started, day = time.monotonic(), date.today().isoformat()
    data = {"evidence": run_evidence(plan, say), "plan": asdict(plan), "day": day}
    data |= {"cpus": os.cpu_count(), "bench_seconds": round(time.monotonic() - started)}
    figures = evidence_figures(data["evidence"])
    lines = ([QUICK_NOTE] if quick else []) + [EVIDENCE_METHOD]
    paths = write(day, suffix, data, figures, lines, [])
    print(table(figures))
    say(
        f"done in {data['bench_seconds']} s; wrote "
        + ", ".join(str(p.relative_to(REPO)) for p in paths)
    )
    return 0


def _load_services_code() -> None:
    """Import the services' code once, up front: later in-process profiles then see one version."""
    # Others may edit the repo during a run; a module imported half way could mismatch the rest.
    import bot.web  # noqa: F401
    import registry.flows.lifecycle  # noqa: F401
    import webhooks.app  # noqa: F401
    import worker.tasks  # noqa: F401


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenario",
        nargs="?",
        choices=["scaleout", "doors", "recovery", "sweep", "evidence", "gate"],
        help="scaleout: the curve with 1, 2 and 4 worker processes on PostgreSQL; "
        "doors: the front doors alone (webhooks and the Slack ack), with their profiles; "
        "recovery: whole-worker kills alone; "
        "sweep: the sweep's calls and time against the registry's size; "
        "evidence: event → notice with the evidence in the thread on and off; "
        "gate: the gate inside MLflow's added latency per request, p50 and p99",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few events and short rates: check the harness"
    )
    return parser


def _pipeline_series(data: dict) -> dict[str, list[float]]:
    """Return the per-event latencies to plot: floor and end to end."""
    pipe = data["pipeline"]
    return {
        "floor, 1 process": pipe[1]["floor_latencies"] + pipe[2]["floor_latencies"],
        "floor, 2 processes at once": pipe[2]["two_models"]["floor_burst_latencies"],
        "minimal floor, 1 process": pipe[1]["minimal_latencies"] + pipe[2]["minimal_latencies"],
        "end to end, --concurrency 1": pipe[1]["latencies"],
        "end to end, --concurrency 2": pipe[2]["latencies"],
        "end to end, inside bursts, --concurrency 2, 2 models": pipe[2]["two_models"][
            "burst_latencies"
        ],
    }


def _door_series(data: dict) -> dict[str, list[float]]:
    """Return the front doors' answer times to plot."""
    runs, clicks = data["doors"]["runs"], data["clicks"]
    return {
        "bare, fixed rate": runs["bare_open"]["latencies"],
        "/hooks/training, fixed rate": runs["hooks_open"]["latencies"],
        "Slack ack, 20 concurrent": clicks["concurrent"]["latencies"],
        "bare endpoint, 20 concurrent": clicks["bare_concurrent"]["latencies"],
        "Slack ack, one at a time": clicks["single"]["latencies"],
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
