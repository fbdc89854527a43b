#!/usr/bin/env bash
# rok on this machine, end to end: start it, run a three-step pipeline through it, look at what it recorded,
# restore the state after the middle step and check it, and point at the web page. Run by `make demo`;
# safe to run again (the second run stores almost nothing new: its content is already in the store).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
demo=$repo/examples/demo
export PATH="$repo/.venv/bin:$HOME/.local/bin:$PATH"   # rok, python3 and uv for the steps
export ROK_STATE_DIR=${ROK_STATE_DIR:-$HOME/.local/state/rok}
export ROK_DEMO_DIR=$ROK_STATE_DIR/demo                 # where the demo keeps its own files
# the snapshotter reads local volumes only in these directories (and the state directory): the demo's notebook too
export ROK_VOLUME_ROOTS=${ROK_VOLUME_ROOTS:-$HOME}:$demo/notebook
mkdir -p "$ROK_DEMO_DIR"

bold=""; plain=""
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true); plain=$(tput sgr0 2>/dev/null || true); fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
show() { printf '%s$ %s%s\n' "$bold" "$*" "$plain"; "$@"; }
field() {  # field PYTHON_EXPRESSION: evaluate it over the JSON on stdin (bound to `d`)
    python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"
}

say "1. Start rok on this machine: nats-server (unless one runs), snapshotter, registry, restorer, watcher"
show rok up

say "2. A notebook with two volumes: its workspace holds the code and a wheel; its data volume is empty"
notebook=$demo/notebook
mkdir -p "$notebook/workspace/steps" "$notebook/workspace/wheels" "$notebook/data"
cp "$demo"/steps/* "$notebook/workspace/steps/"
python3 "$demo/build_wheel.py" "$notebook/workspace/wheels" >/dev/null
find "$notebook" -type f | sed "s|$repo/||" | sort

say "3. Run the pipeline: every step between a before- and an after-snapshot"
show rok run "$demo/pipeline.yaml"

say "4. What rok recorded: the bucket (one per experiment), the run's file, every version with its URL"
bucket=$(rok ls --json | field '[b["name"] for b in d if b["experiment"] == "demo"][0]')
show rok ls
file=$(rok ls "$bucket" --json | field 'max(d, key=lambda f: f["started_at"] or "")["name"]')
show rok ls "$bucket"
show rok ls "$bucket" "$file"
versions=$(rok ls "$bucket" "$file" --json)
url_of() { field "[v['url'] for v in d if v['step_name'] == '$1' and v['phase'] == '$2'][0]" <<<"$versions"; }
prepared=$(url_of prepare after)

say "5. Restore the state right after the middle step (prepare) into a new directory"
target=$ROK_DEMO_DIR/restored-$(date +%Y%m%d-%H%M%S)
show rok restore "$prepared" --to "$target"
echo "Does it match what 'prepare' left behind? It recorded a checksum of every file when it ended:"
(cd "$target" && sha256sum --check --quiet "$ROK_DEMO_DIR/prepare.sha256")
if [ -e "$target/workspace/model.json" ]; then
    echo "unexpected: model.json is only written by the next step" >&2
    exit 1
fi
echo "yes: all $(wc -l <"$ROK_DEMO_DIR/prepare.sha256") files match, and model.json (the next step's output) is not there"

say "6. What did the last step (train) change?"
show rok diff "$(url_of train before)" "$(url_of train after)"

say "7. Browse it all"
web=$( (rok status --json || true) | field 'd["web"]')
echo "The snapshot browser: ${bold}${web}${plain}   (rok status shows the services; rok down stops them)"
