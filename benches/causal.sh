#!/usr/bin/env bash
# The shape of Qwen/Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2
# key/value heads, intermediate 4,864, vocabulary 151,936, tied; random
# weights), batch 2: one SFT step on 512-token rows (loss on the last 128)
# and greedy generation of 128 tokens after 512-token prompts. efrlhf
# against PyTorch + transformers in the same run, one process per phase so
# that each has its own peak memory. Writes benches/results/causal.json.
#   benches/causal.sh [PYTHON] [SHAPE]   PYTHON: an interpreter with torch and transformers
#                                        SHAPE: qwen2.5-0.5b (default) or tiny (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
SHAPE="${2:-qwen2.5-0.5b}"
BACKEND="${EFRLHF_BENCH_BACKEND:-cpu}"   # gpu: build with --features gpu
TORCH_DEVICE=cpu; FEATURES=""
if [ "$BACKEND" = gpu ]; then TORCH_DEVICE=cuda; FEATURES="--features gpu"; fi
cargo build --release --quiet --example causal_bench $FEATURES
results=$(mktemp -d)
for phase in train generate; do
    echo "$SHAPE $phase: efrlhf" >&2
    "${CARGO_TARGET_DIR:-target}"/release/examples/causal_bench "$BACKEND" "$SHAPE" "$phase" >"$results/efrlhf-$phase.json"
    echo "$SHAPE $phase: pytorch" >&2
    "$PY" benches/causal_torch.py "$SHAPE" "$phase" "$TORCH_DEVICE" 2>/dev/null >"$results/pytorch-$phase.json"
done
mkdir -p benches/results
"$PY" - "$results" "$SHAPE" <<'PY'
import json, os, platform, subprocess, sys, datetime
d, shape = sys.argv[1], sys.argv[2]
load = lambda who, phase: json.load(open(os.path.join(d, f"{who}-{phase}.json")))
ours = {p: load("efrlhf", p) for p in ("train", "generate")}
theirs = {p: load("pytorch", p) for p in ("train", "generate")}
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), platform.processor())
ratio = lambda key, phase: theirs[phase][key] / ours[phase][key]
out = {
    "date": datetime.date.today().isoformat(),
    "cpu": cpu,
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "shape": shape,
    "efrlhf": ours,
    "pytorch": theirs,
    # > 1: efrlhf faster (time) or lighter (memory).
    "speed_ratio_sft_step": ratio("train_step_seconds", "train"),
    "speed_ratio_generation": ratio("generation_seconds", "generate"),
    "memory_ratio_sft_step": ratio("peak_rss_mib", "train"),
    "memory_ratio_generation": ratio("peak_rss_mib", "generate"),
}
name = "causal.json" if shape == "qwen2.5-0.5b" else f"causal-{shape}.json"
json.dump(out, open(os.path.join("benches/results", name), "w"), indent=1)
print(json.dumps(out, indent=1))
PY
rm -rf "$results"
