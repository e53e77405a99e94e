"""Start the worker (`python -m worker`) or the scheduler (`python -m worker beat`)."""

from __future__ import annotations

import sys

from registry.logs import configure_logging
from registry.settings import SettingsError


def main(argv: list[str]) -> int:
    """Run a Celery worker, or beat when the first argument is `beat`."""
    from worker.app import QUEUE, create_celery

    configure_logging()
    try:
        app = create_celery(require_slack=True)
    except SettingsError as exc:
        print(f"registry-bot worker: {exc}", file=sys.stderr)
        return 2
    if argv[:1] == ["beat"]:
        app.start(["beat", "--loglevel=INFO", *argv[1:]])
    else:
        app.worker_main(["worker", "--loglevel=INFO", "-Q", QUEUE, *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
