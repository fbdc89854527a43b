"""tinyfit: a least-squares line through points, in plain Python (the package the demo installs)."""

from __future__ import annotations

__version__ = "0.1.0"


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """The slope and intercept of the least-squares line through the points (xs[i], ys[i])."""
    n = len(xs)
    if n < 2 or n != len(ys):
        raise ValueError("need at least two points, as many xs as ys")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x
