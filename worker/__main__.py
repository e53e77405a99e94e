"""Start the worker (`python -m worker`) or the scheduler (`python -m worker beat`)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from registry.process.logs import configure_logging
from registry.process.settings import load_settings
from registry.rules.settings import Settings, SettingsError


def main(argv: list[str]) -> int:
    """Run a Celery worker, or beat when the first argument is `beat`."""
    from worker.app import WORKER_REQUIRED, create_celery

    configure_logging()
    beat = argv[:1] == ["beat"]
    try:
        # The scheduler only queues the sweep: it needs Redis, never Slack or MLflow.
        app = create_celery(load_settings(require=() if beat else WORKER_REQUIRED))
    except SettingsError as exc:
        print(f"registry-bot worker: {exc}", file=sys.stderr)
        return 2
    if beat:
        # Beat keeps its state (when each entry last ran) in a file; never where it runs:
        # the image's working directory is read-only. An explicit --schedule still wins.
        schedule = f"--schedule={app.registry_settings.beat_schedule}"
        app.start(["beat", "--loglevel=INFO", schedule, *argv[1:]])
        return 0
    port = os.environ.get("WORKER_METRICS_PORT", "")
    if port:
        serve_metrics(int(port), app.registry_settings)
    queue = app.registry_settings.queue
    app.worker_main(["worker", "--loglevel=INFO", "-Q", queue, *argv])
    return 0


def serve_metrics(port: int, settings: Settings) -> None:
    """Serve the pool's metrics on WORKER_METRICS_HOST:port (multiprocess: every pool process
    counts), with the queue's backlog read from Redis at each scrape."""
    prepare_multiprocess_dir()
    import redis
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from registry.process.backlog import QueueCollector

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=2)
    registry.register(QueueCollector(client, settings.queue_key))
    start_http_server(
        port, addr=os.environ.get("WORKER_METRICS_HOST", "127.0.0.1"), registry=registry
    )


def prepare_multiprocess_dir() -> None:
    """Give the pool processes a fresh shared metrics directory.

    prometheus_client picks its multiprocess mode when first imported, so this runs
    before anything in the worker imports it.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="registry-bot-")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
