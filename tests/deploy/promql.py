"""Just enough of PromQL and of the collector's OpenTelemetry → Prometheus naming to check metric names."""

from __future__ import annotations

import re

# The collector's translation (open-telemetry/opentelemetry-collector-contrib,
# pkg/translator/prometheus/normalize_name.go): split the name on non-alphanumerics, append the unit unless it is
# annotated ({…}) or already a token of the name, `_total` for monotonic sums.
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "1": "", "%": "percent",
}  # fmt: skip


def prometheus_names(name: str, kind: str, unit: str) -> set[str]:
    """The series names Prometheus sees for an OpenTelemetry instrument."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", name) if t]
    main = unit.split("/", 1)[0].strip()
    if main and "{" not in main and "}" not in main:
        prom_unit = "_".join(t for t in re.split(r"[^A-Za-z0-9]+", _UNITS.get(main, main)) if t)
        if prom_unit and prom_unit not in tokens:
            tokens.append(prom_unit)
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    base = "_".join(tokens)
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}


_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels, keywords or Grafana variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\w+", "", text)  # $__rate_interval, $datasource
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
