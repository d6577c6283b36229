#!/usr/bin/env bash
# What `efrlhf report` costs on large sweeps: the HTML's size and the time to
# write it (median of 5) for
#  1. a sweep expanding to 10,001 stages (the runner benchmark's `a -> b` with
#     100 x 100 variants of `b`), planned but not run;
#  2. a reward model swept over 1,000 seeds, all run (naive mean: every variant
#     is a finished result with metrics, averaged over the seeds on the page).
# Writes benches/results/report.json.
#   benches/report.sh [BIN]   (default: target/release/efrlhf, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- "$PWD/target/release/efrlhf"
fi
BIN="$(realpath "$1")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r plugins/examples "$WORK/plugins"
{
  echo 'experiment "sweep" { plugins "plugins"; }'
  echo 'stage "a" kind="shout" { times 1; }'
  echo 'stage "b" kind="shout" { input "a"; }'
  printf 'sweep "x" { vary "b.times"'; for i in $(seq 1 100); do printf ' %d' "$i"; done; echo '; }'
  printf 'sweep "y" { vary "b.note"'; for i in $(seq 1 100); do printf ' "n%d"' "$i"; done; echo '; }'
} > "$WORK/sweep.kdl"
{
  echo 'experiment "seeds" { seed 7; }'
  echo "stage \"prefs\" kind=\"dataset\" { source \"opinpref\" path=\"$PWD/data/opinpref\"; }"
  echo 'stage "mean" kind="reward-model" { input "prefs"; method "naive-mean"; }'
  printf 'sweep "seed" { vary "mean.seed"'; for i in $(seq 1 1000); do printf ' %d' "$i"; done; echo '; }'
} > "$WORK/seeds.kdl"
cd "$WORK"
"$BIN" --cache-dir cache run seeds.kdl >/dev/null 2>&1
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() {
  local name="$1" times=()
  for _ in 1 2 3 4 5; do times+=("$(ms "$BIN" --cache-dir cache report "$name.kdl" -o "$name.html")"); done
  /usr/bin/time -f "%M" -o rss.txt "$BIN" --cache-dir cache report "$name.kdl" -o "$name.html" >/dev/null 2>&1
  local stages
  stages=$("$BIN" --cache-dir cache show "$name.kdl" --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["stages"]))')
  echo "{\"experiment\": \"$name\", \"stages\": $stages, \"median_ms\": $(median "${times[@]}"), \"html_bytes\": $(stat -c %s "$name.html"), \"peak_rss_kib\": $(cat rss.txt)}"
}
a=$(measure sweep)
b=$(measure seeds)
cd - >/dev/null
mkdir -p benches/results
python3 - "$a" "$b" > benches/results/report.json <<'PY'
import json, sys, platform, os, datetime
print(json.dumps({"date": datetime.date.today().isoformat(),
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                  "runs": [json.loads(a) for a in sys.argv[1:]]}, indent=2))
PY
cat benches/results/report.json
