# ruff: noqa: T201  (a pipeline step talks to its user on stdout)
"""Clean the raw customer table into the data volume."""

import csv
import os
from pathlib import Path

data = Path(os.environ["ROK_VOLUME_DATA"])
with (data / "customers.csv").open() as raw, (data / "clean.csv").open("w", newline="") as clean:
    rows = [r for r in csv.DictReader(raw) if r["tenure"]]
    writer = csv.DictWriter(clean, fieldnames=["tenure", "monthly", "churned"])
    writer.writeheader()
    writer.writerows(rows)
print(f"prepared {len(rows)} customers")
