"""Prometheus metrics for the worker (multiprocess) and the bot."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    """What the worker measures: task time, failures, queue wait, decisions, redeliveries."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        # The default registry: in multiprocess mode its values live in shared files.
        self.task_seconds = Histogram(
            "registry_bot_task_seconds", "Task run time", ["task"], registry=registry
        )
        self.task_failures = Counter(
            "registry_bot_task_failures",
            "Tasks that raised (by what failed: mlflow, slack, data, other)",
            ["task", "transient", "kind"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "registry_bot_queue_wait_seconds",
            "Enqueue to start of a task",
            ["task"],
            registry=registry,
        )
        self.decisions = Counter(
            "registry_bot_decisions", "Outcomes of decision tasks", ["outcome"], registry=registry
        )
        self._failure_counters(registry)
        self._sweep_gauges(registry)

    def _failure_counters(self, registry: CollectorRegistry) -> None:
        self.redeliveries = Counter(
            "registry_bot_redeliveries",
            "Tasks run again after their worker died",
            ["task"],
            registry=registry,
        )
        self.slack_errors = Counter(
            "registry_bot_slack_api_errors",
            "Slack API calls that failed",
            ["error"],
            registry=registry,
        )
        self.given_up = Counter(
            "registry_bot_tasks_given_up",
            "Tasks given up after RETRY_FOR of transient failures",
            ["task"],
            registry=registry,
        )
        self.sweep_failures = Counter(
            "registry_bot_sweep_failures",
            "Work the sweep had to leave for later (by what failed: mlflow, slack, data, other)",
            ["kind"],
            registry=registry,
        )

    def _sweep_gauges(self, registry: CollectorRegistry) -> None:
        # Across a pool's processes: the latest sweep wins (whichever process ran it).
        self.sweep_finished = Gauge(
            "registry_bot_sweep_last_finished_timestamp_seconds",
            "When the last sweep finished (Unix time)",
            multiprocess_mode="max",
            registry=registry,
        )
        self.sweep_interval = Gauge(
            "registry_bot_sweep_interval_seconds",
            "SWEEP_INTERVAL: how often the scheduler asks for a sweep",
            multiprocess_mode="max",
            registry=registry,
        )
        self.pending = Gauge(
            "registry_bot_pending_versions",
            "Versions the last sweep found waiting on it (tagged registry_bot.pending): "
            "notices awaiting a decision, and changes half done",
            multiprocess_mode="mostrecent",
            registry=registry,
        )


class BotMetrics:
    """What the bot measures: how fast Slack requests are answered, and how many."""

    def __init__(self, registry: CollectorRegistry):
        self.answer_seconds = Histogram(
            "registry_bot_slack_answer_seconds",
            "Time to answer a Slack request",
            ["status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.09, 0.25, 0.5, 1, 2, 3, 5),
            registry=registry,
        )
