#!/usr/bin/env bash
# The shape of facebook/bart-large (406M parameters, random weights) at batch
# 2, source 512, target 128: one SFT step (forward, backward, AdamW), greedy
# generation of 128 tokens with the key/value cache, one PPO
# update (sampled rollouts of 128 tokens, policy/reference/value passes, one
# step of the clipped losses), and saving and loading the 1.6 GB
# model.safetensors. efrlhf against PyTorch + transformers in the same run,
# one process per phase so that each has its own peak memory. Writes
# benches/results/bart_large.json.
#   benches/bart_large.sh [PYTHON]   PYTHON: an interpreter with torch and transformers
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
BACKEND="${EFRLHF_BENCH_BACKEND:-cpu}"   # gpu: build with --features gpu
TORCH_DEVICE=cpu; FEATURES=""
if [ "$BACKEND" = gpu ]; then TORCH_DEVICE=cuda; FEATURES="--features gpu"; fi
cargo build --release --quiet --example bart_bench $FEATURES
results=$(mktemp -d)
for phase in train generate ppo io; do
    echo "bart-large $phase: efrlhf" >&2
    "${CARGO_TARGET_DIR:-target}"/release/examples/bart_bench "$BACKEND" large "$phase" >"$results/efrlhf-$phase.json"
    echo "bart-large $phase: pytorch" >&2
    "$PY" benches/bart_torch.py large "$phase" "$TORCH_DEVICE" 2>/dev/null >"$results/pytorch-$phase.json"
done
mkdir -p benches/results
"$PY" - "$results" <<'PY'
import json, os, platform, sys, datetime
d = sys.argv[1]
load = lambda who, phase: json.load(open(os.path.join(d, f"{who}-{phase}.json")))
phases = ("train", "generate", "ppo", "io")
ours = {p: load("efrlhf", p) for p in phases}
theirs = {p: load("pytorch", p) for p in phases}
def ratio(key, phase, faster_is_smaller=True):
    a, b = ours[phase].get(key), theirs[phase].get(key)
    if a is None or b is None:
        return None
    return b / a if faster_is_smaller else a / b
out = {
    "date": datetime.date.today().isoformat(),
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "efrlhf": ours,
    "pytorch": theirs,
    # > 1: efrlhf faster (time) or lighter (memory).
    "speed_ratio_sft_step": ratio("train_step_seconds", "train"),
    "speed_ratio_generation": ratio("generation_seconds", "generate"),
    "speed_ratio_ppo_update": ratio("ppo_update_seconds", "ppo"),
    "speed_ratio_save": ratio("save_seconds", "io"),
    "speed_ratio_load": ratio("load_seconds", "io"),
    "memory_ratio_sft_step": ratio("peak_rss_mib", "train"),
    "memory_ratio_ppo_update": ratio("peak_rss_mib", "ppo"),
}
json.dump(out, open("benches/results/bart_large.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
rm -rf "$results"
