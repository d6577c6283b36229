#!/usr/bin/env bash
# One GRPO update against one PPO update of the same 16 sampled summaries,
# for BART and a decoder-only model, at two shapes (random weights): the
# quickstart's (96-token summaries after 160-token sources) and a long-prompt
# one (width 256, 4 layers, 32-token summaries after 1,024-token sources);
# and sampling alone: 16 distinct sources against 4 sources x 4 copies that
# share the source's encoder pass or key/value cache. Both algorithms in the same run, so the
# ratios hold on a shared, noisy machine. Writes benches/results/algorithms.json.
#   benches/algorithms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${EFRLHF_BENCH_BACKEND:-cpu}"   # gpu: build with --features gpu
FEATURES=""
if [ "$BACKEND" = gpu ]; then FEATURES="--features gpu"; fi
cargo build --release --quiet --example algorithms_bench $FEATURES
results=$(mktemp -d)
for shape in quickstart long-prompt; do
    for family in bart qwen2; do
        echo "$shape $family" >&2
        "${CARGO_TARGET_DIR:-target}"/release/examples/algorithms_bench "$BACKEND" "$family" "$shape" >"$results/$shape-$family.json"
    done
done
mkdir -p benches/results
python3 - "$results" <<'PY'
import json, os, platform, subprocess, sys, datetime
d = sys.argv[1]
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), platform.processor())
out = {
    "date": datetime.date.today().isoformat(),
    "cpu": cpu,
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "runs": [json.load(open(os.path.join(d, f"{s}-{f}.json"))) for s in ("quickstart", "long-prompt") for f in ("bart", "qwen2")],
}
json.dump(out, open("benches/results/algorithms.json", "w"), indent=2)
for r in out["runs"]:
    print(f"{r['shape']} {r['architecture']}: GRPO update {r['grpo_update_seconds']:.2f} s, PPO update {r['ppo_update_seconds']:.2f} s "
          f"(GRPO/PPO {r['grpo_over_ppo']:.2f}); sampling 4x4 copies {r['generate_grouped_seconds']:.2f} s, "
          f"16 distinct {r['generate_distinct_seconds']:.2f} s ({r['grouped_over_distinct_sampling']:.2f})")
PY
