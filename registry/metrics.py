"""Prometheus metrics for the worker (multiprocess) and the bot."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class WorkerMetrics:
    """What the worker measures: task time, failures, queue wait, decisions, redeliveries."""

    def __init__(self) -> None:
        # The default registry: in multiprocess mode its values live in shared files.
        self.task_seconds = Histogram("registry_bot_task_seconds", "Task run time", ["task"])
        self.task_failures = Counter(
            "registry_bot_task_failures", "Tasks that raised", ["task", "transient"]
        )
        self.queue_wait = Histogram(
            "registry_bot_queue_wait_seconds", "Enqueue to start of a task", ["task"]
        )
        self.decisions = Counter(
            "registry_bot_decisions", "Outcomes of decision tasks", ["outcome"]
        )
        self.redeliveries = Counter(
            "registry_bot_redeliveries", "Tasks run again after their worker died", ["task"]
        )
        self.slack_errors = Counter(
            "registry_bot_slack_api_errors", "Slack API calls that failed", ["error"]
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
