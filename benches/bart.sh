#!/usr/bin/env bash
# BART throughput: efrlhf (burn, CPU backend; and wgpu when built with
# `--features gpu` and a GPU is present) against PyTorch + transformers on the
# same machine, in one run. Writes benches/results/bart.json.
#   benches/bart.sh [PYTHON]   PYTHON: an interpreter with torch and transformers (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
FEATURES="${EFRLHF_BENCH_FEATURES:-}"
cargo build --release --quiet --example bart_bench ${FEATURES:+--features "$FEATURES"}
OURS=$("${CARGO_TARGET_DIR:-target}"/release/examples/bart_bench cpu)
THEIRS=$("$PY" benches/bart_torch.py 2>/dev/null)
GPU="null"
if [ -n "$FEATURES" ]; then GPU=$("${CARGO_TARGET_DIR:-target}"/release/examples/bart_bench gpu || echo null); fi
mkdir -p benches/results
"$PY" - "$OURS" "$THEIRS" "$GPU" <<'PY'
import json, sys, platform, os, datetime
ours, theirs, gpu = (json.loads(a) for a in sys.argv[1:4])
out = {
    "date": datetime.date.today().isoformat(),
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "efrlhf_cpu": ours,
    "pytorch_cpu": theirs,
    "efrlhf_wgpu": gpu,
    "ratio_train_tokens_per_second": ours["train_tokens_per_second"] / theirs["train_tokens_per_second"],
    "ratio_generation_tokens_per_second": ours["generation_tokens_per_second"] / theirs["generation_tokens_per_second"],
}
json.dump(out, open("benches/results/bart.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
