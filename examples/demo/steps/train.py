"""Step 3: fit a line to the data with the installed tinyfit, and save the model in the workspace.

Usage: train.py WORKSPACE DATA
"""

# ruff: noqa: T201  (a demo script: printing is what it is for)

import csv
import json
import sys
from pathlib import Path

workspace, data = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(workspace / "lib"))  # what step 1 installed
import tinyfit  # noqa: E402

with (data / "points.csv").open() as f:
    points = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(f)]
slope, intercept = tinyfit.fit_line([x for x, _ in points], [y for _, y in points])
model = {"slope": round(slope, 4), "intercept": round(intercept, 4), "points": len(points)}
(workspace / "model.json").write_text(json.dumps(model, indent=2) + "\n")
with (workspace / "notes.md").open("a") as f:
    f.write(f"- model.json: y = {model['slope']}x + {model['intercept']}\n")
print(f"fitted y = {model['slope']}x + {model['intercept']} on {len(points)} points")
