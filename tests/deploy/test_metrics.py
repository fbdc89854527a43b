"""Every metric a dashboard or an alert queries is one that rok's services (or the NATS exporter) export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rokcommon.telemetry import METRICS

from .manifests import DEPLOY
from .promql import metric_names, prometheus_names

OBSERVABILITY = DEPLOY / "observability"
FIXTURES = Path(__file__).parent / "fixtures"


def _nats_exporter_metrics() -> set[str]:
    lines = (FIXTURES / "nats_exporter_metrics.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _queries() -> list[tuple[str, str]]:
    """(where, PromQL expression) of every dashboard panel target and every alert rule."""
    found = []
    for path in sorted((OBSERVABILITY / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found.append((f"alerts.yaml: {rule['alert']}", rule["expr"]))
    return found


QUERIES = _queries()
DECLARED = {name: spec for spec in METRICS for name in prometheus_names(spec.name, spec.kind, spec.unit)}
NATS = _nats_exporter_metrics()


def test_the_collector_translation_matches_its_documented_examples():
    assert prometheus_names("rok.snapshot.duration", "histogram", "s") == {
        "rok_snapshot_duration_seconds_bucket",
        "rok_snapshot_duration_seconds_sum",
        "rok_snapshot_duration_seconds_count",
    }
    # The unit is not repeated when the name has it, and annotations ({…}) are not units.
    assert prometheus_names("rok.snapshot.bytes.new", "counter", "By") == {"rok_snapshot_bytes_new_total"}
    assert prometheus_names("rok.restore.failures", "counter", "{restore}") == {"rok_restore_failures_total"}
    assert prometheus_names("http.server.duration", "histogram", "ms") >= {"http_server_duration_milliseconds_sum"}


def test_metric_names_are_found_in_promql_and_nothing_else():
    expr = 'histogram_quantile(0.99, sum by (le, step) (rate(a_b_bucket{x="y z"}[5m]))) / on (job) c offset 5m'
    assert metric_names(expr) == {"a_b_bucket", "c"}


def test_every_dashboard_and_alert_queries_something():
    assert {where.split(":")[0] for where, _ in QUERIES} >= {
        "rok-snapshots.json",
        "rok-bus-and-restores.json",
        "alerts.yaml",
    }
    for where, expr in QUERIES:
        assert metric_names(expr), f"{where}: `{expr}` selects no metric"


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_queried_metric_is_exported(where: str, expr: str):
    for name in metric_names(expr):
        assert name in DECLARED or name in NATS, (
            f"{where} queries {name}, which neither rok (rokcommon.telemetry.METRICS, as the collector names "
            f"them) nor the NATS exporter exports"
        )
