#!/usr/bin/env bash
# Download throughput from a Hub: efrlhf against Python's huggingface_hub, the
# same file from the same stand-in Hub on 127.0.0.1 (tests/fixtures/hub/standin_hub.py),
# in one run, each into a fresh cache, alternating three times. The file is an
# LFS file (a dataset's JSONL, 256 MB by default), so both follow the redirect to
# the stand-in's CDN origin. Writes benches/results/hub_download.json.
#   benches/hub_download.sh [PYTHON] [MB]   PYTHON: an interpreter with huggingface_hub
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
MB="${2:-256}"
# EFRLHF_BIN: a built binary to measure (else this builds one).
BIN="${EFRLHF_BIN:-}"
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN="${CARGO_TARGET_DIR:-target}/release/efrlhf"
fi
work=$(mktemp -d)
trap 'kill $HUB 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/repo"
"$PY" - "$work/repo/big.jsonl" "$MB" <<'PY'
import json, sys, random
random.seed(0)
words = "screen battery sound price light bulky great poor sturdy cheap quality keyboard".split()
with open(sys.argv[1], "w") as f:
    n = 0
    while f.tell() < int(sys.argv[2]) * 1_000_000:
        review = " ".join(random.choice(words) for _ in range(60))
        f.write(json.dumps({"id": f"p{n}", "reviews": [review, review[::-1]]}) + "\n")
        n += 1
PY
python3 tests/fixtures/hub/standin_hub.py --repo "datasets/bench/big=$work/repo" > "$work/port" &
HUB=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
EP="http://127.0.0.1:$(head -1 "$work/port")"
cat > "$work/exp.kdl" <<KDL
experiment "bench" { seed 1; }
stage "big" kind="dataset" {
    source "jsonl" path="hf://datasets/bench/big/big.jsonl"
}
KDL
ours=(); theirs=()
for i in 1 2 3; do
    rm -rf "$work/hf-ours" "$work/cache"
    line=$(HF_ENDPOINT="$EP" HF_HUB_CACHE="$work/hf-ours" "$BIN" --cache-dir "$work/cache" run "$work/exp.kdl" --json | grep '"download-done"')
    ours+=("$line")
    rm -rf "$work/hf-py"
    t=$(HF_ENDPOINT="$EP" HF_HUB_CACHE="$work/hf-py" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 "$PY" -c "
import time
from huggingface_hub import hf_hub_download
t = time.perf_counter()
hf_hub_download('bench/big', 'big.jsonl', repo_type='dataset')
print(time.perf_counter() - t)" 2>/dev/null)
    theirs+=("$t")
done
mkdir -p benches/results
"$PY" - "$MB" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, sys, platform, os, datetime, subprocess
mb = int(sys.argv[1]); rest = sys.argv[2:]
ours = [json.loads(l) for l in rest[:3]]
theirs = [float(t) for t in rest[3:]]
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?")
size = ours[0]["bytes"]
out = {
    "date": datetime.date.today().isoformat(),
    "cpu": cpu,
    "cores": os.cpu_count(),
    "bytes": size,
    "efrlhf_seconds": [o["seconds"] for o in ours],
    "huggingface_hub_seconds": theirs,
    "efrlhf_mb_per_second": [size / o["seconds"] / 1e6 for o in ours],
    "huggingface_hub_mb_per_second": [size / t / 1e6 for t in theirs],
    "ratio_median_speed": (sorted(theirs)[1]) / (sorted(o["seconds"] for o in ours)[1]),
    "note": "efrlhf's seconds include verifying the sha256; huggingface_hub checks only the size",
}
json.dump(out, open("benches/results/hub_download.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
