"""Footprint: resident memory, start-up time, and whether the front doors import MLflow."""

from __future__ import annotations

from bench.stack import FRONT_DB, REPO, Bench, Service, memory_kb, python_probe, stop

MB = 1024.0
SERVED_APPS = {"webhooks": "webhooks:create_app()", "bot": "bot:create_wsgi_app()"}
MLFLOW_CHECKS = {
    "webhooks": "import webhooks",
    "bot": "import bot.web",
    "webhooks and bot": "import webhooks, bot.web",
    "webhooks app built": "import webhooks; webhooks.create_app()",
    "bot app built": "import bot; bot.create_wsgi_app()",
}


def memory(service: Service) -> dict:
    """Return a service's resident memory: total, main process, largest process, and PSS."""
    pids = service.pids()
    rss = [memory_kb(pid) / MB for pid in pids]
    pss = [memory_kb(pid, "Pss") / MB for pid in pids]
    return {
        "processes": len(pids),
        "total_rss_mb": round(sum(rss), 1),
        "main_rss_mb": round(rss[0], 1),
        "max_rss_mb": round(max(rss), 1),
        "max_child_rss_mb": round(max(rss[1:], default=0.0), 1),
        "total_pss_mb": round(sum(pss), 1),
    }


def startup_times(bench: Bench, repeats: int) -> dict[str, list[float]]:
    """Start each served app under gunicorn `repeats` times; return seconds to /healthz."""
    times: dict[str, list[float]] = {}
    for name, target in SERVED_APPS.items():
        for _ in range(repeats):
            service = bench.gunicorn(f"{name}-startup", target, FRONT_DB)
            times.setdefault(name, []).append(round(service.start_seconds, 3))
            stop(service)
    return times


def imports_mlflow(bench: Bench) -> dict[str, bool]:
    """Say, per check, whether importing (or building) a front door loads mlflow."""
    return {name: _loads_mlflow(bench, code) for name, code in MLFLOW_CHECKS.items()}


def _loads_mlflow(bench: Bench, code: str) -> bool:
    probe = f"{code}; import sys; print('mlflow' in sys.modules)"
    done = python_probe(bench, ["-c", probe])
    return done.stdout.strip().splitlines()[-1] == "True"


def repo_relative(path: str) -> str:
    """Shorten a file path to its package-relative form, naming no machine paths."""
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3." else tail
    return path.replace(str(REPO) + "/", "")
