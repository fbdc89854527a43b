# ruff: noqa: T201  (a pipeline step talks to its user on stdout)
"""Score the model; fail (exit 1) when it is no better than always guessing 'stays'."""

import csv
import json
import os
import sys
from pathlib import Path

data = Path(os.environ["ROK_VOLUME_DATA"])
rows = list(csv.DictReader((data / "clean.csv").open()))
model = json.loads(Path("model.json").read_text())
hits = sum((float(r["tenure"]) < model["tenure_below"]) == (r["churned"] == "1") for r in rows)
baseline = sum(r["churned"] == "0" for r in rows)
Path("metrics.json").write_text(json.dumps({"accuracy": hits / len(rows), "baseline": baseline / len(rows)}))
print(f"accuracy {hits / len(rows):.2f} (baseline {baseline / len(rows):.2f})")
sys.exit(0 if hits >= baseline else 1)
