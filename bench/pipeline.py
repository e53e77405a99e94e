"""End to end: signed training event in, Staging notice recorded by the Slack double out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.load import post, training_request
from bench.prelog import LoggedRun
from registry.flows.notice import NOTICE_EVENT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from devkit.slack_double import SlackDouble

EVENT_TIMEOUT = 60.0


@dataclass
class Batch:
    """One batch of events, spread over its registered models: send and notice times."""

    models: list[str]
    sent: dict[str, float] = field(default_factory=dict)  # run id -> wall time sent
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0  # first send to last notice

    @property
    def rate(self) -> float:
        """Return events per second from the first send to the last notice."""
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


class NoticeWatch:
    """Record when each Staging notice reaches the Slack double, by model and version."""

    def __init__(self, slack: SlackDouble) -> None:
        self.slack = slack
        self.events = slack.subscribe()
        self.seen: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        while True:
            call = self.events.get()
            if call is None:
                return
            meta = call.params.get("metadata") or {}
            if (
                call.method != "chat.postMessage"
                or call.status != 200
                or call.params.get("thread_ts")
            ):
                continue
            if not isinstance(meta, dict) or meta.get("event_type") != NOTICE_EVENT:
                continue
            payload = meta.get("event_payload") or {}
            with self.cond:
                self.seen.setdefault(
                    (payload.get("model", ""), str(payload.get("version"))), call.at
                )
                self.cond.notify_all()

    def count(self, model_name: str) -> int:
        """Return how many notices `model_name` has had."""
        with self.cond:
            return sum(1 for model, _ in self.seen if model == model_name)

    def wait(self, model_name: str, count: int, timeout: float) -> None:
        """Block until `model_name` has `count` notices; raise TimeoutError otherwise."""
        with self.cond:
            if not self.cond.wait_for(lambda: self._count(model_name) >= count, timeout):
                raise TimeoutError(f"{self._count(model_name)} of {count} notices for {model_name}")

    def _count(self, model_name: str) -> int:
        return sum(1 for model, _ in self.seen if model == model_name)

    def times(self, model_name: str) -> dict[str, float]:
        """Return version -> notice time for `model_name`."""
        with self.cond:
            return {v: at for (m, v), at in self.seen.items() if m == model_name}

    def close(self) -> None:
        """Stop watching."""
        self.slack.unsubscribe(self.events)
        self.events.put(None)


@dataclass
class Pipeline:
    """Where events go in, where notices come out, and how to wait until the worker is idle."""

    webhooks_url: str
    watch: NoticeWatch
    client: Any
    settle: Callable[[], object] = lambda: None


def paired(
    pipe: Pipeline,
    model_name: str,
    runs: list[LoggedRun],
    floors: Sequence[tuple[Callable[[LoggedRun], float], list[LoggedRun]]],
) -> tuple[Batch, list[list[float]]]:
    """Alternate floor events and end-to-end events, each alone on an idle server.

    Each floor is a function doing one event and its runs; return the end-to-end batch
    and each floor's times, in the order given.
    """
    batch, before = Batch([model_name]), pipe.watch.count(model_name)
    times: list[list[float]] = [[] for _ in floors]
    order = list(range(len(floors)))
    started = time.time()
    for i, run in enumerate(runs, 1):
        turn = order[i % len(order) :] + order[: i % len(order)]  # each floor leads in turn
        if i % 2:  # alternate which goes first, so neither always follows the other
            for k in turn:
                times[k].append(floors[k][0](floors[k][1][i - 1]))
        _send(pipe.webhooks_url, batch, model_name, run)
        pipe.watch.wait(model_name, before + i, EVENT_TIMEOUT)
        pipe.settle()  # the task's last tag writes follow the notice: let them finish
        if not i % 2:
            for k in turn:
                times[k].append(floors[k][0](floors[k][1][i - 1]))
    return _finish(batch, pipe, started), times


def burst(pipe: Pipeline, models: list[str], runs: list[LoggedRun]) -> Batch:
    """Send every event at once (models in turn), wait for the notices, then for idle workers."""
    batch, before = Batch(models), {m: pipe.watch.count(m) for m in models}
    events = [(models[i % len(models)], run) for i, run in enumerate(runs)]
    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda event: _send(pipe.webhooks_url, batch, *event), events))
    for model in models:
        expected = before[model] + sum(1 for m, _ in events if m == model)
        pipe.watch.wait(model, expected, EVENT_TIMEOUT + 5 * len(runs))
    pipe.settle()
    return _finish(batch, pipe, started)


def _send(webhooks_url: str, batch: Batch, model_name: str, run: LoggedRun) -> None:
    req = training_request(webhooks_url, model_name, run.run_id)
    batch.sent[run.run_id] = time.time()
    _, status = post(req)
    if status != 202:
        raise RuntimeError(f"training event answered {status}")


def _finish(batch: Batch, pipe: Pipeline, started: float) -> Batch:
    """Match notices to events through the registry (model, version -> run) and time each."""
    noticed: dict[str, float] = {}
    for model in batch.models:
        found = pipe.client.search_model_versions(f"name = '{model}'")
        runs = {str(mv.version): mv.run_id for mv in found}
        for version, at in pipe.watch.times(model).items():
            if runs.get(version) in batch.sent:
                noticed[runs[version]] = at
    batch.latencies = [noticed[r] - sent for r, sent in batch.sent.items() if r in noticed]
    batch.elapsed = max(noticed.values()) - started
    return batch


def seed_versions(client: MlflowClient, model_name: str, run: LoggedRun, count: int) -> float:
    """Give `model_name` `count` versions of one logged model, fast; return the seconds."""
    started = time.perf_counter()
    client.create_registered_model(model_name)

    def create(_: int) -> None:
        client.create_model_version(
            model_name, run.source, run_id=run.run_id, model_id=run.model_id, await_creation_for=0
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(count)))
    return time.perf_counter() - started
