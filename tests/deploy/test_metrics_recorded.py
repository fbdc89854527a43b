"""Every rok metric a dashboard or an alert queries is recorded by some code, not only declared, and every label
it groups by is an attribute that code records it with."""

from __future__ import annotations

import ast
import functools
import re

import pytest

from .manifests import ROOT
from .test_metrics import DECLARED, QUERIES, metric_names

SOURCES = [ROOT / "libs" / "rokcommon" / "src", *sorted((ROOT / "services").glob("*/src"))]
# Labels Prometheus or the collector add to every series (histogram buckets, the scrape job and instance).
PROMETHEUS_LABELS = {"le", "job", "instance"}


def _attribute_keys(node: ast.AST | None, function: ast.AST | None) -> set[str] | None:
    """The keys of an attributes argument: a dict literal, or a name bound to one in the same function."""
    if node is None:
        return set()
    if isinstance(node, ast.Dict):
        return {k.value for k in node.keys if isinstance(k, ast.Constant)}
    if isinstance(node, ast.Name) and function is not None:
        for child in ast.walk(function):
            if (
                isinstance(child, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == node.id for t in child.targets)
                and isinstance(child.value, ast.Dict)
            ):
                return {k.value for k in child.value.keys if isinstance(k, ast.Constant)}
    return None  # unknown: do not judge


@functools.cache
def recorded() -> dict[str, list[set[str] | None]]:
    """Instrument name → the attribute keys of each place the code records it (`<x>.add("rok.…", v, attrs)`)."""
    found: dict[str, list[set[str] | None]] = {}
    for source in SOURCES:
        for path in source.rglob("*.py"):
            if path.name == "telemetry.py" and path.parent.name == "rokcommon":
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"add", "record"}
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and node.args[0].value.startswith("rok.")
                ):
                    function = next(
                        (f for f in functions if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)), None
                    )
                    attrs = node.args[2] if len(node.args) > 2 else None
                    found.setdefault(node.args[0].value, []).append(_attribute_keys(attrs, function))
    return found


def _grouping_labels(expr: str) -> set[str]:
    """Labels an expression groups by or selects on (`by (a, b)`, `metric{a="x"}`)."""
    labels = set()
    for match in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in match.group(1).split(",") if label.strip()}
    for match in re.finditer(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(1)))
    return labels


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_queried_rok_metric_is_recorded_by_some_code(where: str, expr: str):
    for name in metric_names(expr):
        if name in DECLARED:
            assert DECLARED[name].name in recorded(), f"{where} queries {DECLARED[name].name}, which no code records"


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_label_a_rok_query_groups_or_selects_by_is_recorded(where: str, expr: str):
    names = metric_names(expr)
    if not names or not all(n in DECLARED for n in names):
        return  # NATS exporter series carry the exporter's labels
    for name in names:
        for keys in recorded().get(DECLARED[name].name, []):
            if keys is None:
                continue
            missing = _grouping_labels(expr) - PROMETHEUS_LABELS - keys
            assert not missing, f"{where} groups {name} by {sorted(missing)}; the code records it with {sorted(keys)}"
