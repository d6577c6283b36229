#!/usr/bin/env bash
# Runner overhead benchmark. Writes benches/results/runner.json.
#  1. no-op `run` of a fully cached 10-stage experiment (median of 30 runs)
#  2. `plan` of a sweep expanding to 10,000 stages (median of 5 runs)
# Usage: benches/runner.sh [PREVIOUS_BIN]   (builds the release binary first)
# With PREVIOUS_BIN (an earlier release), its no-op run is timed too, each of
# its runs right after one of this build's, in its own cache.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN="$PWD/target/release/efrlhf"
PREV="${1:-}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r plugins/examples "$WORK/plugins"

{
  echo 'experiment "bench10" { plugins "plugins"; }'
  echo 'stage "s0" kind="shout" { times 1; }'
  for i in $(seq 1 9); do echo "stage \"s$i\" kind=\"shout\" { input \"s$((i-1))\"; times 1; note \"$i\"; }"; done
} > "$WORK/ten.kdl"
{
  echo 'experiment "bench10k" { plugins "plugins"; }'
  echo 'stage "a" kind="shout" { times 1; }'
  echo 'stage "b" kind="shout" { input "a"; }'
  printf 'sweep "x" { vary "b.times"'; for i in $(seq 1 100); do printf ' %d' "$i"; done; echo '; }'
  printf 'sweep "y" { vary "b.note"'; for i in $(seq 1 100); do printf ' "n%d"' "$i"; done; echo '; }'
} > "$WORK/sweep.kdl"

cd "$WORK"
"$BIN" --cache-dir cache run ten.kdl >/dev/null 2>&1
time_ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
[ -z "$PREV" ] || "$PREV" --cache-dir cache-prev run ten.kdl >/dev/null 2>&1
noop=(); prev=()
for _ in $(seq 1 30); do
  noop+=("$(time_ms "$BIN" --cache-dir cache run ten.kdl)")
  [ -z "$PREV" ] || prev+=("$(time_ms "$PREV" --cache-dir cache-prev run ten.kdl)")
done
stages=$("$BIN" --cache-dir cache plan sweep.kdl --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["stages"]))')
plan=(); for _ in $(seq 1 5); do plan+=("$(time_ms "$BIN" --cache-dir cache plan sweep.kdl --json)"); done
/usr/bin/time -f "%M" -o rss.txt "$BIN" --cache-dir cache plan sweep.kdl --json >/dev/null 2>&1 || echo 0 > rss.txt
cd - >/dev/null
mkdir -p benches/results
python3 - "$stages" "$(cat "$WORK/rss.txt")" "${noop[*]}" "${plan[*]}" "${prev[*]:-}" > benches/results/runner.json <<'PY'
import json, statistics, sys, platform, os, datetime
stages, rss, noop, plan = int(sys.argv[1]), int(sys.argv[2]), [int(x) for x in sys.argv[3].split()], [int(x) for x in sys.argv[4].split()]
prev = [int(x) for x in sys.argv[5].split()]
summary = lambda xs: {"median": statistics.median(xs) / 1000, "min": min(xs) / 1000, "max": max(xs) / 1000, "runs": len(xs)}
out = {
    "date": datetime.date.today().isoformat(),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "noop_run_10_stages_ms": summary(noop),
    "plan_sweep": {"stages": stages, "median_ms": statistics.median(plan) / 1000, "min_ms": min(plan) / 1000, "max_ms": max(plan) / 1000, "peak_rss_kib": rss, "runs": len(plan)},
}
if prev:
    out["previous_noop_run_10_stages_ms"] = summary(prev)
print(json.dumps(out, indent=2))
PY
cat benches/results/runner.json
