#!/usr/bin/env bash
# The Slurm executor's overhead, on a one-node cluster brought up here
# (tests/fixtures/slurm/up.sh; needs root and Debian's slurm-wlm). Writes
# benches/results/slurm.json:
#  1. a chain of 10 trivial stages (each waits for the previous): the wall
#     time per job, local against --executor slurm;
#  2. a 20-variant sweep of one trivial stage: wall time, local against Slurm
#     (the node has as many CPUs as this machine; local runs `--jobs` = CPUs).
# Each is the median of 3 runs from an empty cache.
# Usage: benches/slurm.sh [BIN]   (default: builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then BIN="$(realpath "$1")"; else cargo build --release --quiet; BIN="$PWD/target/release/efrlhf"; fi
WORK="$(mktemp -d)"
CLUSTER="$WORK/cluster"
trap 'tests/fixtures/slurm/down.sh "$CLUSTER"; rm -rf "$WORK"' EXIT
EFRLHF_SLURM_PORT=${EFRLHF_SLURM_PORT:-16917} tests/fixtures/slurm/up.sh "$CLUSTER" >/dev/null
export SLURM_CONF="$CLUSTER/etc/slurm.conf"
cp -r plugins/examples "$WORK/plugins"
printf 'executor "slurm" {\n    poll 0.2\n}\n' > "$WORK/executor.kdl"
{
  echo 'experiment "chain10" { plugins "plugins"; }'
  echo 'stage "s0" kind="shout" { times 1; }'
  for i in $(seq 1 9); do echo "stage \"s$i\" kind=\"shout\" { input \"s$((i-1))\"; times 1; }"; done
} > "$WORK/chain.kdl"
{
  echo 'experiment "sweep20" { plugins "plugins"; }'
  echo 'stage "a" kind="shout" { times 1; }'
  printf 'sweep "x" { vary "a.times"'; for i in $(seq 1 20); do printf ' %d' "$i"; done; echo '; }'
} > "$WORK/sweep.kdl"
cd "$WORK"
# Median wall seconds of 3 runs of `efrlhf run FILE ARGS...`, each in a new cache.
median() {
  local file=$1; shift
  for r in 1 2 3; do
    rm -rf cache
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" --cache-dir cache run "$file" "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
  done | sort -g | sed -n 2p
}
SL=(--executor slurm --executor-config executor.kdl)
chain_local=$(median chain.kdl)
chain_slurm=$(median chain.kdl "${SL[@]}")
sweep_local=$(median sweep.kdl)
sweep_slurm=$(median sweep.kdl "${SL[@]}")
cd - >/dev/null
mkdir -p benches/results
python3 - "$chain_local" "$chain_slurm" "$sweep_local" "$sweep_slurm" <<'PY' > benches/results/slurm.json
import datetime, json, os, subprocess, sys
cl, cs, sl, ss = map(float, sys.argv[1:])
print(json.dumps({
    "date": datetime.date.today().isoformat(),
    "machine": f"{os.cpu_count()} CPUs, one-node Slurm {subprocess.run(['sinfo', '-V'], capture_output=True, text=True).stdout.strip()}",
    "chain10": {"local_s": round(cl, 3), "slurm_s": round(cs, 3),
                "slurm_overhead_per_job_s": round((cs - cl) / 10, 3)},
    "sweep20": {"local_s": round(sl, 3), "slurm_s": round(ss, 3), "slurm_over_local": round(ss / sl, 2)},
}, indent=2))
PY
cat benches/results/slurm.json
