#!/usr/bin/env bash
# One-shot check of efrlhf on a real GPU, at most 8 minutes on one H200 from a
# fresh machine: tests/gpu.rs on the hardware adapter (it must not be a
# software one), then benches/bart.sh's 6M-parameter BART and
# benches/bart_large.sh's BART-large shape on the wgpu backend, f32 and bf16,
# against PyTorch CUDA in the same run. Each step has a time limit and the
# whole run a deadline, so a slow or broken step costs its limit, is recorded
# as such, and the rest still runs.
#
#   benches/gpu-check.sh prepare     on a machine with cargo: builds the wgpu
#                                    binaries into .gpu-check/bins.tar.xz (git-ignored)
#                                    with the Vulkan loader's .deb, for a GPU
#                                    machine that has no Rust toolchain
#                                    (the device tool carries it: carry
#                                    [".gpu-check"])
#   benches/gpu-check.sh [PYTHON]    on the GPU machine, from the checkout;
#                                    PYTHON has torch with CUDA (default python3)
#
# Writes gpu-check.json and gpu-check.log to $OUT when set (a lent machine's
# output folder), else to benches/results/. Without a GPU it still runs and
# says so in the JSON (every step that needs one fails within its limit).
set -uo pipefail
cd "$(dirname "$0")/.."
PREPARED=.gpu-check

# The executable of cargo target NAME in cargo's JSON messages on stdin (cargo
# test also builds, and lists, the efrlhf binary).
executable_of() {
    python3 -c 'import json, sys
found = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("executable") and m["target"]["name"] == sys.argv[1]]
print(found[-1])' "$1"
}

prepare() {
    set -e
    # From nothing: a dry run leaves unpacked binaries here, too big to carry.
    rm -rf "$PREPARED"
    mkdir -p "$PREPARED/debs"
    # SPIR-V kernels (Cargo.toml's `vulkan`) are what an NVIDIA or AMD box runs;
    # GPU_CHECK_FEATURES=gpu checks the WGSL path instead.
    local built features=${GPU_CHECK_FEATURES:-vulkan}
    built=$(cargo build --release --locked --features "$features" --example bart_bench --message-format=json-render-diagnostics |
        executable_of bart_bench)
    cp "$built" "$PREPARED/bart_bench"
    built=$(cargo test --release --locked --features "$features" --test gpu --no-run --message-format=json-render-diagnostics |
        executable_of gpu)
    cp "$built" "$PREPARED/gpu-tests"
    strip "$PREPARED/bart_bench" "$PREPARED/gpu-tests" 2>/dev/null || true
    # 146 MB stripped, 23 MB as xz: what a lent machine can carry is 64 MiB.
    tar -C "$PREPARED" -cJf "$PREPARED/bins.tar.xz" bart_bench gpu-tests
    rm "$PREPARED/bart_bench" "$PREPARED/gpu-tests"
    # The loader (libvulkan.so.1) is not on every CUDA image; the driver's ICD is.
    (cd "$PREPARED/debs" && apt-get download libvulkan1 >/dev/null 2>&1) ||
        echo "apt-get download libvulkan1 failed: the GPU machine must have a Vulkan loader" >&2
    du -sh "$PREPARED" >&2
}

if [ "${1:-}" = prepare ]; then prepare; exit; fi

PY="${1:-python3}"
DEST="${OUT:-benches/results}"
mkdir -p "$DEST"
STEPS=$(mktemp -d)
LOG="$DEST/gpu-check.log"
: >"$LOG"
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-470}))

# A Vulkan loader and the NVIDIA ICD where the image has the driver but not these.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' && ls "$PREPARED"/debs/*.deb >/dev/null 2>&1; then
    for deb in "$PREPARED"/debs/*.deb; do dpkg -x "$deb" /; done
    ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] &&
    ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$nvidia_icd
fi

# Nothing prepared: build here when cargo is at hand.
if [ ! -x "$PREPARED/bart_bench" ] && [ ! -f "$PREPARED/bins.tar.xz" ] && command -v cargo >/dev/null; then
    "$0" prepare >>"$LOG" 2>&1 || echo "build failed: see $LOG" >&2
fi
# Unpacked with Python's tarfile: the GPU image need not have xz.
if [ ! -x "$PREPARED/bart_bench" ] && [ -f "$PREPARED/bins.tar.xz" ]; then
    "$PY" - "$PREPARED/bins.tar.xz" "$PREPARED" <<'PY' || echo "cannot unpack $PREPARED/bins.tar.xz" >&2
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    try:
        t.extractall(sys.argv[2], filter="data")
    except TypeError:  # a Python without extraction filters
        t.extractall(sys.argv[2])
PY
fi
if [ -x "$PREPARED/bart_bench" ]; then
    BENCH="$PREPARED/bart_bench"; TESTS="$PREPARED/gpu-tests"
else
    echo "no prepared binaries in $PREPARED: run '$0 prepare' where cargo is" >&2
    BENCH=false; TESTS=false
fi

# step NAME LIMIT CMD...: runs CMD with at most LIMIT seconds (less when the
# deadline is nearer), its stdout to $STEPS/NAME.out, its status to NAME.rc.
step() {
    local name=$1 limit=$2 left=$((DEADLINE - SECONDS))
    shift 2
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then echo skipped >"$STEPS/$name.rc"; return; fi
    echo "== $name (limit ${limit}s)" | tee -a "$LOG" >&2
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$STEPS/$name.out" 2>>"$LOG"
    echo $? >"$STEPS/$name.rc"
    echo $((SECONDS - t0)) >"$STEPS/$name.seconds"
    tail -c 2000 "$STEPS/$name.out" >>"$LOG"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$STEPS/gpu.txt" 2>/dev/null ||
    echo none >"$STEPS/gpu.txt"
export CARGO_MANIFEST_DIR="$PWD" EFRLHF_REQUIRE_HARDWARE_GPU=1
# In order of what matters most, so that a deadline cuts the least important.
step tests 150 "$TESTS" --test-threads 1 --nocapture
step efrlhf-small-f32 90 "$BENCH" gpu small train,generate f32
step pytorch-small-f32 60 "$PY" benches/bart_torch.py small train,generate cuda f32
step efrlhf-large-train-f32 90 "$BENCH" gpu large train f32
step pytorch-large-train-f32 60 "$PY" benches/bart_torch.py large train cuda f32
step efrlhf-small-bf16 60 "$BENCH" gpu small train,generate bf16
step pytorch-small-bf16 45 "$PY" benches/bart_torch.py small train,generate cuda bf16
step efrlhf-large-train-bf16 60 "$BENCH" gpu large train bf16
step pytorch-large-train-bf16 45 "$PY" benches/bart_torch.py large train cuda bf16
step efrlhf-large-ppo-f32 90 "$BENCH" gpu large ppo f32
step pytorch-large-ppo-f32 60 "$PY" benches/bart_torch.py large ppo cuda f32

"${PY}" - "$STEPS" "$DEST/gpu-check.json" <<'PY'
import datetime, json, os, sys
steps, dest = sys.argv[1:3]
def read(name, ext):
    try:
        return open(os.path.join(steps, f"{name}.{ext}")).read().strip()
    except OSError:
        return None
names = sorted({f.rsplit(".", 1)[0] for f in os.listdir(steps) if f.endswith(".rc")})
results = {}
for name in names:
    rc, out = read(name, "rc"), read(name, "out") or ""
    r = {"status": "skipped (deadline)" if rc == "skipped" else
         "ok" if rc == "0" else "timed out" if rc in ("124", "137") else f"failed (exit {rc})",
         "seconds": float(read(name, "seconds") or 0)}
    if name != "tests" and rc == "0":
        try:
            r["result"] = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            r["status"] = "ok, but no JSON"
    if name == "tests":
        r["summary"] = [l for l in out.splitlines() if l.startswith("test ") or "adapter" in l]
    results[name] = r
def ratio(ours, theirs, key, time_like):
    a = results.get(ours, {}).get("result", {}).get(key)
    b = results.get(theirs, {}).get("result", {}).get(key)
    if not a or not b:
        return None
    return b / a if time_like else a / b
ratios = {}
for p in ("f32", "bf16"):
    ratios[f"small_{p}_train_tokens_per_second"] = ratio(
        f"efrlhf-small-{p}", f"pytorch-small-{p}", "train_tokens_per_second", False)
    ratios[f"small_{p}_generation_tokens_per_second"] = ratio(
        f"efrlhf-small-{p}", f"pytorch-small-{p}", "generation_tokens_per_second", False)
    ratios[f"large_{p}_sft_step"] = ratio(
        f"efrlhf-large-train-{p}", f"pytorch-large-train-{p}", "train_step_seconds", True)
ratios["large_f32_ppo_update"] = ratio(
    "efrlhf-large-ppo-f32", "pytorch-large-ppo-f32", "ppo_update_seconds", True)
out = {"date": datetime.date.today().isoformat(), "gpu": read("gpu", "txt"),
       "ratios_efrlhf_over_pytorch": ratios, "steps": results}
json.dump(out, open(dest, "w"), indent=1)
print(json.dumps(out, indent=1))
PY
rm -rf "$STEPS"
