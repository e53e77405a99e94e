"""Heartbeat files a service without an HTTP port touches while it works, and their probe.

`python -m registry.process.heartbeat worker live` exits 0 while the worker's loop runs, and
`python -m registry.process.heartbeat worker ready` while it can also do its work now (for the
worker: it consumes, and Redis answers). Likewise `scheduler` and `bot` (Socket Mode). The
files live in the temporary directory, the one place a read-only container writes, so each
container has its own; this module imports nothing but the standard library, so a probe
costs a bare interpreter's start.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

EVERY = 10.0  # seconds between two beats of every service
# How old a beat may be. Ready: two beats missed. Live: a loop stalled for a minute, longer
# than any of its steps should take (a Redis or Slack call has a timeout of seconds).
WITHIN = {"live": 60.0, "ready": 3 * EVERY}
SERVICES = ("worker", "scheduler", "bot")
USAGE = f"usage: python -m registry.process.heartbeat {{{'|'.join(SERVICES)}}} {{live|ready}}"


class Heartbeat:
    """One service's heartbeat files: `<tmp>/registry-bot-<service>.live` and `.ready`."""

    def __init__(self, service: str, directory: str | Path | None = None):
        base = Path(directory or tempfile.gettempdir()) / f"registry-bot-{service}"
        self.service = service
        self.files = {kind: base.with_suffix(f".{kind}") for kind in WITHIN}

    def reset(self) -> None:
        """Forget the beats of an earlier run (a container restarted in the same pod)."""
        for path in self.files.values():
            path.unlink(missing_ok=True)

    def beat(self, *, ready: bool) -> None:
        """Say the service's loop ran now and, when `ready`, that it can do its work."""
        self.files["live"].touch()
        if ready:
            self.files["ready"].touch()

    def unready(self) -> None:
        """Say at once that the service cannot do its work (it stopped consuming)."""
        self.files["ready"].unlink(missing_ok=True)

    def problem(self, kind: str, now: float | None = None) -> str:
        """Return why the service is not `kind` (live or ready), or '' when it is."""
        try:
            age = (time.time() if now is None else now) - self.files[kind].stat().st_mtime
        except FileNotFoundError:
            return f"{self.service} is not {kind}: no heartbeat"
        if age > WITHIN[kind]:
            said = f"last beat {age:.0f} s ago (at most {WITHIN[kind]:.0f} s)"
            return f"{self.service} is not {kind}: {said}"
        return ""


def keep_beating(
    heart: Heartbeat, ready: Callable[[], bool], stop: threading.Event | None = None
) -> None:
    """Beat every EVERY seconds, ready as `ready()` says, until `stop` is set."""
    stop = stop or threading.Event()
    while True:
        heart.beat(ready=ready())
        if stop.wait(EVERY):
            return


def main(argv: list[str]) -> int:
    """Probe a service's heartbeat: exit 0 when it is live (or ready), else 1 with one line."""
    if len(argv) != 2 or argv[0] not in SERVICES or argv[1] not in WITHIN:
        print(USAGE, file=sys.stderr)
        return 2
    problem = Heartbeat(argv[0]).problem(argv[1])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
