"""Step 2: write the data file — 500 noisy points on the line y = 3x + 2 — into the data volume.

It also records a checksum of every file the two volumes hold when it ends, outside the volumes (in
ROK_DEMO_DIR), so that the demo can show that the restored after-state of this step is exactly this.
Usage: prepare.py WORKSPACE DATA
"""

# ruff: noqa: T201  (a demo script: printing is what it is for)

import hashlib
import os
import random
import sys
from pathlib import Path

workspace, data = Path(sys.argv[1]), Path(sys.argv[2])
rng = random.Random(42)
rows = ["x,y"] + [f"{x:.4f},{3 * x + 2 + rng.gauss(0, 0.5):.4f}" for x in (rng.uniform(0, 10) for _ in range(500))]
(data / "points.csv").write_text("\n".join(rows) + "\n")
(workspace / "notes.md").write_text("# notes\n\n- points.csv: 500 points around y = 3x + 2\n")
print(f"wrote {len(rows) - 1} points to {data / 'points.csv'}")

checksums = []
for name, root in (("workspace", workspace), ("data", data)):
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        checksums.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}/{path.relative_to(root)}")
out = Path(os.environ.get("ROK_DEMO_DIR", ".")) / "prepare.sha256"
out.write_text("\n".join(checksums) + "\n")
print(f"recorded {len(checksums)} checksums in {out}")
