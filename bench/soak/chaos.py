"""The soak's chaos: whole-worker kills, a Redis and an MLflow restart, Slack 429s and 500s."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import redis

from bench.soak.stack import SoakStack

log = logging.getLogger(__name__)

# The Slack calls that answer 429 or 500 now and then, and how many times in a row. Four
# outlast the client's own three retries, so the worker's task retries too; the bot answers
# within the request and has only the client's retries (past them it logs the failure), so
# the calls it makes see at most three.
FAULT_RUNS = {
    "chat.postMessage": (1, 1, 2, 4),
    "chat.update": (1, 1, 2, 4),
    "chat.postEphemeral": (1, 2, 3),
    "response_url": (1, 2, 3),
}


@dataclass
class Kill:
    """One whole-worker kill: when, how many processes died, how many messages they held."""

    at: float
    processes: int
    held: int
    down_seconds: float = 0.0


@dataclass
class ChaosLog:
    """What the chaos did."""

    kills: list[Kill] = field(default_factory=list)
    redis_restarts: int = 0
    mlflow_restarts: int = 0
    mlflow_down_seconds: float = 0.0  # the long outage: MLflow stopped, then started again
    faults: int = 0  # fault runs queued on the double
    errors: list[str] = field(default_factory=list)


class Chaos(threading.Thread):
    """Works through a schedule of faults spread over the drive, then stops."""

    def __init__(self, stack: SoakStack, schedule: list[tuple[float, str]], seed: int = 7):
        super().__init__(name="soak-chaos", daemon=True)
        self.stack, self.schedule = stack, sorted(schedule)
        self.random = random.Random(seed)
        self.done = ChaosLog()
        self._down_at = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        for offset, action in self.schedule:
            if self.stopping.wait(max(0.0, started + offset - time.monotonic())):
                return
            try:
                getattr(self, action)()
            except Exception as exc:  # a chaos step that failed is a finding, not a crash
                log.exception("chaos %s failed", action)
                self.done.errors.append(f"{action}: {exc}")

    def stop(self) -> None:
        """Stop after the current step."""
        self.stopping.set()
        self.join(timeout=600)

    def kill(self) -> None:
        """SIGKILL the worker's process group while it holds work, then start it again."""
        deadline = time.monotonic() + 5
        while not self._held() and time.monotonic() < deadline:
            time.sleep(0.1)
        held, at = self._held(), time.time()
        kill = Kill(at, self.stack.kill_worker(), held)
        time.sleep(self.random.uniform(0.0, 3.0))
        self.stack.start("worker")
        kill.down_seconds = time.time() - at
        self.done.kills.append(kill)

    def redis(self) -> None:
        self.stack.restart_redis()
        self.done.redis_restarts += 1

    def mlflow(self) -> None:
        self.stack.restart_mlflow()
        self.done.mlflow_restarts += 1

    def mlflow_down(self) -> None:
        """Stop MLflow for longer than any fixed retry budget (a migration, an upgrade)."""
        self.stack.stop_mlflow()
        self._down_at = time.monotonic()

    def mlflow_up(self) -> None:
        self.stack.start_mlflow()
        self.done.mlflow_down_seconds = time.monotonic() - self._down_at

    def slack(self) -> None:
        method = self.random.choice(sorted(FAULT_RUNS))
        status = self.random.choice((429, 500))
        retry_after = 1 if status == 429 else None
        count = self.random.choice(FAULT_RUNS[method])
        self.stack.slack.fail_next(method, status=status, retry_after=retry_after, count=count)
        self.done.faults += 1

    def _held(self) -> int:
        try:
            return int(self.stack.redis().hlen("unacked"))
        except redis.RedisError:
            return 0


def schedule(
    seconds: float,
    kills: int,
    faults: int,
    *,
    kills_within: float = 1.0,
    redis: bool = True,
    mlflow: bool = True,
    outage: float = 0.0,
    seed: int = 7,
) -> list[tuple[float, str]]:
    """Spread the kills over the first `kills_within` of `seconds`, the Slack faults over all
    of it; one Redis restart and one MLflow restart; an MLflow outage of `outage` seconds
    from a quarter of the way in."""
    rng = random.Random(seed)
    slot = seconds * kills_within / max(kills, 1)
    plan = [(slot * (i + rng.uniform(0.2, 0.8)), "kill") for i in range(kills)]
    plan += [(rng.uniform(0.05, 0.95) * seconds, "slack") for _ in range(faults)]
    if redis:
        plan.append((0.35 * seconds, "redis"))
    if mlflow:
        plan.append((0.62 * seconds, "mlflow"))
    if outage:
        plan += [(0.25 * seconds, "mlflow_down"), (0.25 * seconds + outage, "mlflow_up")]
    return plan
