#!/usr/bin/env bash
# What checking consumed inputs costs. With a cached quickstart, times:
#  1. a no-op `run` (nothing is consumed, nothing is hashed; median of 20),
#  2. `plan` after a change to PPO's `kl-coef` (the plan re-hashes in full every
#     stored result PPO and the evaluation will read: the SFT model, φ, the
#     dataset; median of 10),
#  3. the `run` that recomputes PPO and the evaluation (once).
# Each for every binary given, in this order, in one session (the machine is
# shared and noisy: compare within a run). Writes benches/results/input_checks.json.
#   benches/input_checks.sh [BIN[:CACHE]...]   (default: target/release/efrlhf, built first;
#   a CACHE that already holds this quickstart is copied instead of filled from scratch)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- "$PWD/target/release/efrlhf"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
results=()
for ARG in "$@"; do
  BIN="${ARG%%:*}"
  c="$WORK/cache-$RANDOM"
  if [ "$ARG" != "$BIN" ]; then cp -r "${ARG#*:}" "$c"; fi
  exp="experiments/quickstart.kdl"
  tmp="experiments/.input-checks-$$.kdl"
  cp "$exp" "$tmp"
  "$BIN" --cache-dir "$c" run "$tmp" >/dev/null 2>&1
  noop=(); for _ in $(seq 1 20); do noop+=("$(ms "$BIN" --cache-dir "$c" run "$tmp")"); done
  sed -i 's/kl-coef 0.2/kl-coef 0.21/' "$tmp"
  plan=(); for _ in $(seq 1 10); do plan+=("$(ms "$BIN" --cache-dir "$c" plan "$tmp")"); done
  rerun=$(ms "$BIN" --cache-dir "$c" run "$tmp")
  rm -f "$tmp"
  results+=("{\"bin\": \"$BIN\", \"noop_run_ms\": $(median "${noop[@]}"), \"plan_after_kl_change_ms\": $(median "${plan[@]}"), \"rerun_ppo_and_eval_ms\": $rerun}")
done
mkdir -p benches/results
python3 - "${results[@]}" > benches/results/input_checks.json <<'PY'
import json, sys, platform, os, datetime
print(json.dumps({"date": datetime.date.today().isoformat(),
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                  "runs": [json.loads(a) for a in sys.argv[1:]]}, indent=2))
PY
cat benches/results/input_checks.json
