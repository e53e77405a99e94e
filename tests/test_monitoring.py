"""deploy/monitoring: the Grafana dashboard's and the Prometheus rules' queries parse, and name
only metrics registry-bot exports; the rules cover what SPEC 16 asks to be alerted on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
import yaml

from tests.support import REPO, metric_families

MONITORING = REPO / "deploy" / "monitoring"
RULES = yaml.safe_load((MONITORING / "alerts.yaml").read_text(encoding="utf-8"))
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text(encoding="utf-8"))
# Sample names each metric type exposes, by prometheus_client's text format.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "unknown": ("",),
}


def exported() -> set[str]:
    """Return every sample name the services export, from their own metric definitions."""
    return {f.name + suffix for f in metric_families() for suffix in SUFFIXES[f.type]}


def rules() -> list[dict[str, Any]]:
    return [rule for group in RULES["groups"] for rule in group["rules"]]


def queries() -> list[tuple[str, str]]:
    """Return (where, PromQL) for every query of the rules and the dashboard."""
    found = [(f"alert {r['alert']}", r["expr"]) for r in rules()]
    for panel in DASHBOARD["panels"]:
        found += [(f"panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    return found


def selectors(node: Any) -> Iterator[str]:
    """Yield the metric name of every vector selector in a parsed PromQL expression."""
    if type(node).__name__ == "VectorSelector":
        yield node.name
        return
    for attr in ("lhs", "rhs", "expr", "args", "vector_selector", "param"):
        child = getattr(node, attr, None)
        for item in child if isinstance(child, list) else [child]:
            if item is not None and type(item).__module__.startswith("promql_parser"):
                yield from selectors(item)


@pytest.mark.parametrize(("where", "query"), queries(), ids=[w for w, _ in queries()])
def test_each_query_parses_and_names_only_exported_metrics(where, query):
    try:
        parsed = promql_parser.parse(query)
    except ValueError as exc:
        pytest.fail(f"{where}: {exc}: {query}")
    names = set(selectors(parsed))
    assert names, f"{where} reads no metric"
    ours = {name for name in names if name.startswith("registry_bot_")}
    assert ours == names, f"{where} reads metrics registry-bot does not export: {names - ours}"
    assert ours <= exported(), f"{where}: not exported: {sorted(ours - exported())}"


def test_the_name_check_sees_a_misspelt_metric():
    parsed = promql_parser.parse("max(registry_bot_queue_depht) > 1 or rate(registry_bot_x[5m])")
    assert set(selectors(parsed)) == {"registry_bot_queue_depht", "registry_bot_x"}
    assert not set(selectors(parsed)) <= exported()


def test_a_query_that_does_not_parse_is_refused():
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(registry_bot_queue_depth[5m])")


def test_the_rules_are_well_formed():
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert promql_parser.parse_duration(rule["for"]).total_seconds() >= 300


@pytest.mark.parametrize(
    ("what", "metric"),
    [
        ("the scheduler stopped", "registry_bot_sweep_last_finished_timestamp_seconds"),
        ("the queue backing up", "registry_bot_queue_oldest_age_seconds"),
        ("notices failing", "registry_bot_task_failures_total"),
        ("Slack failing", "registry_bot_slack_api_errors_total"),
        ("MLflow failing", "registry_bot_task_failures_total"),
        ("a model the sweep skips", "registry_bot_sweep_failures_total"),
    ],
)
def test_the_rules_alert_on_what_spec_16_names(what, metric):
    reading = [rule["alert"] for rule in rules() if metric in rule["expr"]]
    assert reading, f"no rule alerts on {what} ({metric})"


def test_the_dashboard_shows_the_new_metrics():
    shown = {
        name
        for _, query in queries()[len(rules()) :]
        for name in selectors(promql_parser.parse(query))
    }
    for metric in (
        "registry_bot_queue_depth",
        "registry_bot_queue_oldest_age_seconds",
        "registry_bot_sweep_last_finished_timestamp_seconds",
        "registry_bot_pending_versions",
        "registry_bot_task_failures_total",
        "registry_bot_sweep_failures_total",
    ):
        assert metric in shown, metric
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and DASHBOARD["uid"] == "registry-bot"
