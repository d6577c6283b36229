#!/usr/bin/env bash
# Full fine-tuning against LoRA (rank 16, alpha 32, every linear layer of the
# blocks) and LoRA with activation checkpointing: peak memory and time of an
# SFT step and a PPO update at the shapes of facebook/bart-large and
# Qwen/Qwen2.5-0.5B, BART-large's SFT step at source length 1,024, and one
# LoRA PPO update at the shape of Qwen/Qwen2.5-1.5B. efrlhf
# (examples/lora_bench.rs) against PyTorch + transformers + PEFT
# (benches/lora_torch.py) in the same run, one process per measurement so
# that each has its own peak memory. Writes benches/results/lora.json.
#   benches/lora.sh [PYTHON]   PYTHON: an interpreter with torch, transformers and peft
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
cargo build --release --quiet --example lora_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/lora_bench"
results=$(mktemp -d)
runs=(
    "bart-large full sft 512" "bart-large lora sft 512" "bart-large lora-ckpt sft 512"
    "bart-large lora sft 1024" "bart-large lora-ckpt sft 1024"
    "bart-large full ppo 512" "bart-large lora ppo 512" "bart-large lora-ckpt ppo 512"
    "qwen2.5-0.5b full sft 512" "qwen2.5-0.5b lora sft 512" "qwen2.5-0.5b lora-ckpt sft 512"
    "qwen2.5-0.5b full ppo 512" "qwen2.5-0.5b lora ppo 512" "qwen2.5-0.5b lora-ckpt ppo 512"
    "qwen2.5-1.5b lora ppo 512" "qwen2.5-1.5b lora-ckpt ppo 512"
)
for run in "${runs[@]}"; do
    name=${run// /_}
    echo "$run: efrlhf" >&2
    # shellcheck disable=SC2086
    "$BIN" $run >"$results/efrlhf_$name.json" || echo '{"error": "failed"}' >"$results/efrlhf_$name.json"
    echo "$run: pytorch" >&2
    # shellcheck disable=SC2086
    "$PY" benches/lora_torch.py $run 2>/dev/null >"$results/pytorch_$name.json" ||
        echo '{"error": "failed"}' >"$results/pytorch_$name.json"
done
mkdir -p benches/results
"$PY" - "$results" <<'PY'
import datetime, json, os, platform, subprocess, sys
d = sys.argv[1]
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(
    ["lscpu"], capture_output=True, text=True).stdout.splitlines()
    if l.startswith("Model name")), platform.processor())
runs = {}
for f in sorted(os.listdir(d)):
    who, name = f[:-5].split("_", 1)
    runs.setdefault(name, {})[who] = json.load(open(os.path.join(d, f)))
def get(name, who, key):
    return runs.get(name, {}).get(who, {}).get(key)
def ratio(a, b):
    return None if a is None or b is None or a == 0 else b / a
seconds = lambda name: "sft_step_seconds" if "_sft_" in name else "ppo_update_seconds"
table = {}
for name, r in runs.items():
    key = seconds(name)
    table[name] = {
        "efrlhf_seconds": get(name, "efrlhf", key), "pytorch_seconds": get(name, "pytorch", key),
        "efrlhf_peak_mib": get(name, "efrlhf", "peak_rss_mib"),
        "pytorch_peak_mib": get(name, "pytorch", "peak_rss_mib"),
        "efrlhf_static_mib": get(name, "efrlhf", "static_rss_mib"),
        "pytorch_static_mib": get(name, "pytorch", "static_rss_mib"),
        # > 1: efrlhf faster or lighter.
        "speed_ratio": ratio(get(name, "efrlhf", key), get(name, "pytorch", key)),
        "memory_ratio": ratio(get(name, "efrlhf", "peak_rss_mib"), get(name, "pytorch", "peak_rss_mib")),
    }
def activations(name, who):
    peak, static = get(name, who, "peak_rss_mib"), get(name, who, "static_rss_mib")
    return None if peak is None or static is None else peak - static
out = {
    "date": datetime.date.today().isoformat(),
    "cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
    "runs": table,
    "targets": {
        # LoRA PPO peak memory over full fine-tuning's (at most 0.5).
        "bart_large_lora_ppo_over_full_ppo_memory": ratio(
            get("bart-large_full_ppo_512", "efrlhf", "peak_rss_mib"),
            get("bart-large_lora_ppo_512", "efrlhf", "peak_rss_mib")),
        # efrlhf's LoRA PPO peak over PyTorch + PEFT's (at most 1).
        "bart_large_lora_ppo_memory_vs_peft": ratio(
            get("bart-large_lora_ppo_512", "pytorch", "peak_rss_mib"),
            get("bart-large_lora_ppo_512", "efrlhf", "peak_rss_mib")),
        # Activation memory (peak - weights) with checkpointing over without, source 1,024 (at most 0.5).
        "bart_large_checkpointed_activations_at_1024": ratio(
            activations("bart-large_lora_sft_1024", "efrlhf"),
            activations("bart-large_lora-ckpt_sft_1024", "efrlhf")),
        # LoRA SFT step time, PyTorch + PEFT's over efrlhf's (at least 1).
        "bart_large_lora_sft_speed_vs_peft": table.get("bart-large_lora_sft_512", {}).get("speed_ratio"),
        "qwen_0_5b_lora_sft_speed_vs_peft": table.get("qwen2.5-0.5b_lora_sft_512", {}).get("speed_ratio"),
    },
}
json.dump(out, open("benches/results/lora.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
rm -rf "$results"
