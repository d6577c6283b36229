#!/usr/bin/env bash
# Remote cache benchmark: push and pull of the quickstart's results (and of a 256 MiB bulk
# stage: 32 files of 8 MiB) to a folder remote and to a local S3 (moto's server on 127.0.0.1),
# against `dvc push` / `dvc pull` of the same files to the same kinds of remote, in one run.
# Writes benches/results/remote.json.
#  - efrlhf: `cache push experiments/quickstart.kdl` from a cache holding its results, then
#    `cache pull` into an empty cache (every file re-hashed on arrival), then a no-op push.
#  - DVC: the same artifact folders `dvc add`ed in a git repo (hashing not timed), `dvc push`,
#    then `dvc pull` after emptying its cache and workspace, then a no-op push.
# Each timing is the median of 3 (a fresh remote and an empty cache each time); every pull
# is followed by `cache verify`.
# Usage: benches/remote.sh   (needs python3 with venv; installs DVC and moto into a venv under
# $EFRLHF_BENCH_VENV, default ~/.cache/efrlhf-bench-dvc; computes the quickstart once into
# $EFRLHF_BENCH_CACHE, default ~/.cache/efrlhf-bench-quickstart, a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/efrlhf"
VENV="${EFRLHF_BENCH_VENV:-$HOME/.cache/efrlhf-bench-dvc}"
QS="${EFRLHF_BENCH_CACHE:-$HOME/.cache/efrlhf-bench-quickstart}"
"$VENV/bin/python" -c 'import dvc, dvc_s3, moto' 2>/dev/null || {
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "dvc[s3]==3.67.1" "moto[server]==5.2.1"
}
"$BIN" --cache-dir "$QS" run experiments/quickstart.kdl >/dev/null 2>&1
WORK="$(mktemp -d)"
MOTO_PID=""
cleanup() { [ -z "$MOTO_PID" ] || kill "$MOTO_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# moto's S3 on 127.0.0.1, with a bucket for each tool.
"$VENV/bin/python" - > "$WORK/moto.port" 2>/dev/null <<'PY' &
import sys, time, boto3
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False); s.start()
port = s.get_host_and_port()[1]
c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
for b in ["efrlhf", "dvc"]:
    c.create_bucket(Bucket=b)
print(port, flush=True)
while True:
    time.sleep(3600)
PY
MOTO_PID=$!
for _ in $(seq 1 100); do grep -qE '^[0-9]+$' "$WORK/moto.port" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -E '^[0-9]+$' "$WORK/moto.port")
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"

# A bulk workload besides: 32 files of 8 MiB (pseudo-random), one stage of a plugin written here.
mkdir -p "$WORK/bulk/plugins"
cat > "$WORK/bulk/plugins/blob.kdl" <<'KDL'
plugin "blob" version="1" {
    doc "Files of pseudo-random bytes"
    run "python3" "blob.py"
    param "files" type="int" default=32 min=1 doc="how many"
    param "mib" type="int" default=8 min=1 doc="MiB each"
}
KDL
cat > "$WORK/bulk/plugins/blob.py" <<'PYB'
import json, os, random
spec = json.load(open(os.environ["EFRLHF_STAGE"]))
rng = random.Random(spec["seed"])
for i in range(spec["params"]["files"]):
    with open(os.path.join(spec["output"], f"part-{i:03}.bin"), "wb") as f:
        f.write(rng.randbytes(spec["params"]["mib"] << 20))
PYB
printf 'experiment "bulk" {\n    plugins "plugins"\n}\nstage "blob" kind="blob" {\n}\n' > "$WORK/bulk/bulk.kdl"
BULK_CACHE="$WORK/bulk-cache"
"$BIN" --cache-dir "$BULK_CACHE" run "$WORK/bulk/bulk.kdl" >/dev/null 2>&1

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
declare -A SIZE

# measure NAME CACHE EXPERIMENT: both tools, both remotes, 3 rounds.
measure() {
  local name=$1 cache=$2 exp=$3 outs dvc="$WORK/dvc-$1"
  mapfile -t outs < <("$BIN" --cache-dir "$cache" show "$exp" --format json |
    python3 -c 'import json,sys; [print(s["output"]) for s in json.load(sys.stdin)["stages"] if s.get("output")]')
  SIZE[$name]="$(du -sb --apparent-size "${outs[@]}" | awk '{s+=$1} END {print s}') $(find "${outs[@]}" -type f | wc -l)"
  # The same artifact folders, as DVC tracks them (hashing them is not timed).
  mkdir -p "$dvc/data" && cd "$dvc"
  git init -q . && git config user.email b@e && git config user.name b
  "$VENV/bin/dvc" init -q && "$VENV/bin/dvc" config core.analytics false
  for o in "${outs[@]}"; do cp -r "$o" "data/$(basename "$o")"; chmod -R u+w "data/$(basename "$o")"; done
  "$VENV/bin/dvc" add -q data/*
  "$VENV/bin/dvc" remote add -q folder "$WORK/dvc-folder-$name"
  "$VENV/bin/dvc" remote add -q s3 "s3://dvc/$name"
  "$VENV/bin/dvc" remote modify -q s3 endpointurl "$AWS_ENDPOINT_URL"
  cd "$ROOT"
  for round in 1 2 3; do
    local folder="$WORK/efr-folder-$name" pulled="$WORK/pulled-$name" t r
    rm -rf "$folder" "$pulled" && mkdir -p "$folder"
    t=$(now); "$BIN" --cache-dir "$cache" cache push "$exp" --remote="$folder" >/dev/null 2>&1; add "${name}_efr_folder_push" "$(ms_since "$t")"
    t=$(now); "$BIN" --cache-dir "$cache" cache push "$exp" --remote="$folder" >/dev/null 2>&1; add "${name}_efr_folder_noop" "$(ms_since "$t")"
    t=$(now); "$BIN" --cache-dir "$pulled" cache pull "$exp" --remote="$folder" >/dev/null 2>&1; add "${name}_efr_folder_pull" "$(ms_since "$t")"
    "$BIN" --cache-dir "$pulled" cache verify >/dev/null
    rm -rf "$pulled" "$folder"
    t=$(now); "$BIN" --cache-dir "$cache" cache push "$exp" --remote="s3://efrlhf/$name-$round" >/dev/null 2>&1; add "${name}_efr_s3_push" "$(ms_since "$t")"
    t=$(now); "$BIN" --cache-dir "$cache" cache push "$exp" --remote="s3://efrlhf/$name-$round" >/dev/null 2>&1; add "${name}_efr_s3_noop" "$(ms_since "$t")"
    t=$(now); "$BIN" --cache-dir "$pulled" cache pull "$exp" --remote="s3://efrlhf/$name-$round" >/dev/null 2>&1; add "${name}_efr_s3_pull" "$(ms_since "$t")"
    "$BIN" --cache-dir "$pulled" cache verify >/dev/null
    rm -rf "$pulled"
    cd "$dvc"
    rm -rf "$WORK/dvc-folder-$name"
    "$VENV/bin/dvc" remote modify -q s3 url "s3://dvc/$name-$round"
    for r in folder s3; do
      t=$(now); "$VENV/bin/dvc" push -q -r "$r" >/dev/null 2>&1; add "${name}_dvc_${r}_push" "$(ms_since "$t")"
      t=$(now); "$VENV/bin/dvc" push -q -r "$r" >/dev/null 2>&1; add "${name}_dvc_${r}_noop" "$(ms_since "$t")"
      rm -rf .dvc/cache data/*/
      t=$(now); "$VENV/bin/dvc" pull -q -r "$r" >/dev/null 2>&1; add "${name}_dvc_${r}_pull" "$(ms_since "$t")"
    done
    cd "$ROOT"
  done
}
measure quickstart "$QS" experiments/quickstart.kdl
measure bulk "$BULK_CACHE" "$WORK/bulk/bulk.kdl"

mkdir -p benches/results
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
python3 - "$CPU" "$(declare -p T)" "$(declare -p SIZE)" > benches/results/remote.json <<'PY'
import json, statistics, sys, datetime, os, re
cpu, decl, sizes = sys.argv[1], sys.argv[2], sys.argv[3]
times = {k: [int(x) for x in v.split()] for k, v in re.findall(r'\[(\w+)\]="([^"]*)"', decl)}
size = {k: [int(x) for x in v.split()] for k, v in re.findall(r'\[(\w+)\]="([^"]*)"', sizes)}
out = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cpus": os.cpu_count(), "runs": 3}
for name, (nbytes, nfiles) in size.items():
    med = {k[len(name) + 1:]: statistics.median(v) for k, v in times.items() if k.startswith(name + "_")}
    mbps = lambda ms: round(nbytes / 1e6 / (ms / 1000), 1)
    w = {"bytes": nbytes, "files": nfiles, "median_ms": med}
    for remote in ["folder", "s3"]:
        for op in ["push", "pull"]:
            e, d = med[f"efr_{remote}_{op}"], med[f"dvc_{remote}_{op}"]
            w[f"{remote}_{op}"] = {"efrlhf_MB_per_s": mbps(e), "dvc_MB_per_s": mbps(d), "speedup": round(d / e, 2)}
        w[f"{remote}_noop_push_ms"] = {"efrlhf": med[f"efr_{remote}_noop"], "dvc": med[f"dvc_{remote}_noop"]}
    out[name] = w
out["runs_ms"] = times
print(json.dumps(out, indent=2))
PY
cat benches/results/remote.json
