# ruff: noqa: T201  (a pipeline step talks to its user on stdout)
"""Fit a one-feature threshold model on the clean table; write it into the workspace."""

import csv
import json
import os
from pathlib import Path

data = Path(os.environ["ROK_VOLUME_DATA"])
rows = list(csv.DictReader((data / "clean.csv").open()))
best = max((sum((float(r["tenure"]) < t) == (r["churned"] == "1") for r in rows), t) for t in range(1, 73))
Path("model.json").write_text(json.dumps({"tenure_below": best[1], "train_hits": best[0]}))
print(f"trained: churn if tenure < {best[1]}")
