"""Start the worker (`python -m worker`) or the scheduler (`python -m worker beat`)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from registry.logs import configure_logging
from registry.settings import SettingsError


def main(argv: list[str]) -> int:
    """Run a Celery worker, or beat when the first argument is `beat`."""
    from worker.app import create_celery

    configure_logging()
    try:
        app = create_celery(require_slack=True)
    except SettingsError as exc:
        print(f"registry-bot worker: {exc}", file=sys.stderr)
        return 2
    if argv[:1] == ["beat"]:
        app.start(["beat", "--loglevel=INFO", *argv[1:]])
        return 0
    port = os.environ.get("WORKER_METRICS_PORT", "")
    if port:
        serve_metrics(int(port))
    queue = app.registry_settings.queue
    app.worker_main(["worker", "--loglevel=INFO", "-Q", queue, *argv])
    return 0


def serve_metrics(port: int) -> None:
    """Serve the pool's metrics on 127.0.0.1:port (multiprocess: every pool process counts)."""
    prepare_multiprocess_dir()
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
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
