#!/usr/bin/env bash
# Every GPU measurement of regop in one run on one device: the GPU kernel tests against the CPU
# reference, the engine benchmarks, Adult zoos (batched and one model at a time), a prune editor
# trained on one, the side-by-side tables against the PyTorch + PyTorch Geometric peer
# (tools/peer/side_by_side.py), a per-kernel profile, and each editor against the baselines.
#
# The prune editor trained here starts from LAMP and reads no data, which is what the peer
# implements; the carried editors (the yardstick's, with OBS starts and calibration signals) are
# timed against the baselines by `regop compare`.
#
# Every stage has its own time limit and a failed stage does not stop the later ones: the run
# ends with a table of stages, their exit codes and times. Results go to $OUT (default
# ./device-run), at most 8 files: the small reports as they are, the rest in extra.tgz.
#
# On a GPU machine, after ../shared/gpu/prepare.sh has filled .gpu/ here, with the Adult files
# copied to .gpu/data/adult, editors to .gpu/editors/{prune,minimise,fairness}/ and the GPU test
# binaries to .gpu/tests/ (see BENCHMARKS.md):
#     bash .gpu/on-device.sh bash tools/peer/device_run.sh
# On this machine's CPU backend (small, to try the script):
#     DEVICE=cpu MODELS=24 STEPS=20 BATCHES=1,4 ITERS=3 CMP_MODELS=3 bash tools/peer/device_run.sh
set -uo pipefail
DEVICE=${DEVICE:-gpu}
MODELS=${MODELS:-128}
STEPS=${STEPS:-300}
BATCHES=${BATCHES:-1,4,16,64,256,1024,4096}
ITERS=${ITERS:-20}
CMP_MODELS=${CMP_MODELS:-20}
EDITORS=${EDITORS:-$( [ -d .gpu/editors ] && echo .gpu/editors || echo )}
REGOP=${REGOP:-$( [ -x .gpu/bin/regop ] && echo .gpu/bin/regop || echo target/release/regop )}
DATA=${DATA:-$( [ -d .gpu/data/adult ] && echo .gpu/data/adult || echo ../shared/datasets/adult )}
OUT=${OUT:-device-run}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$WORK"
zoo="$WORK/zoo"
stages="$WORK/stages.txt"
: > "$stages"

# stage NAME SECONDS CMD...: runs CMD under a time limit, logs its exit code and wall time.
stage() {
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  local s=$(date +%s%N)
  timeout "$limit" "$@"
  local rc=$?
  local ms=$(( ($(date +%s%N) - s) / 1000000 ))
  echo "  ($name: rc $rc, $ms ms)" >&2
  awk -v n="$name" -v r="$rc" -v t="$ms" 'BEGIN { printf "| %s | %s | %.1f s |\n", n, r, t / 1000 }' >> "$stages"
}

stage info 30 bash -c "'$REGOP' --device '$DEVICE' info > '$OUT/info.txt' 2>&1; cat '$OUT/info.txt' >&2"

# The GPU kernel tests, built here with `cargo test --release --no-run`, stripped and packed into
# .gpu/tests.tar.xz. They find their fixtures, sources and the regop binary through the path they
# were built in (BUILT_IN): point it at this checkout.
run_tests() {
  mkdir -p "$WORK/tests" && tar xJf "$TESTS" -C "$WORK/tests" || return 1
  if [ ! -e "$BUILT_IN" ]; then mkdir -p "$(dirname "$BUILT_IN")"; ln -s "$PWD" "$BUILT_IN"; fi
  [ -x target/release/regop ] || { mkdir -p target/release && cp "$REGOP" target/release/; }
  local rc=0
  for t in "$WORK"/tests/tests/*; do
    echo "-- $(basename "$t")"
    "$t" --test-threads 4 > "$WORK/test.log" 2>&1 || rc=1
    grep -E '^test |test result|panicked|REGOP_TEST_SEED' "$WORK/test.log"
  done
  return $rc
}
TESTS=${TESTS:-$( [ -f .gpu/tests.tar.xz ] && echo .gpu/tests.tar.xz || echo )}
BUILT_IN=${BUILT_IN:-/work/main}
if [ -n "$TESTS" ]; then
  stage "GPU tests" 100 bash -c "$(declare -f run_tests); TESTS='$TESTS' WORK='$WORK' BUILT_IN='$BUILT_IN' REGOP='$REGOP' run_tests" > "$OUT/tests.txt" 2>&1
  grep -E '^-- |test result|FAILED|panicked' "$OUT/tests.txt" >&2
fi

stage "engine bench" 90 bash -c "'$REGOP' --device '$DEVICE' bench > '$OUT/engine.txt'"
stage "zoo: $MODELS Adult models" 120 "$REGOP" --device "$DEVICE" zoo --data "$DATA" \
  --count "$MODELS" --out "$zoo" --force
stage "zoo: 32 x [64,64], batched" 45 "$REGOP" --device "$DEVICE" zoo --data "$DATA" --count 32 \
  --widths 64 --depth 2 --epochs 4 --max-batch 256 --out "$WORK/zoo-batched" --force
stage "zoo: 32 x [64,64], one at a time" 45 "$REGOP" --device "$DEVICE" zoo --data "$DATA" \
  --count 32 --widths 64 --depth 2 --epochs 4 --max-batch 1 --out "$WORK/zoo-single" --force
stage "prune editor: $STEPS steps" 120 "$REGOP" --device "$DEVICE" train --zoo "$zoo" \
  --data "$DATA" --requirement prune --prune-score lamp --signals false --steps "$STEPS" \
  --eval-every "$STEPS" --force
stage "side by side" 180 python3 tools/peer/side_by_side.py --regop "$REGOP" --device "$DEVICE" \
  --editor "$zoo/editor-prune/editor.safetensors" --zoo "$zoo" --data "$DATA" \
  --batches "$BATCHES" --iters "$ITERS" --out "$WORK/side-by-side"
cp "$WORK/side-by-side/side_by_side.md" "$OUT/" 2>/dev/null
stage "profile" 45 bash -c "'$REGOP' --device '$DEVICE' bench --editor '$zoo/editor-prune/editor.safetensors' --zoo '$zoo' --data '$DATA' --batches 1 --iters 5 --profile > '$OUT/profile.txt'"

# Each editor against the baselines, timed on the device: one edit against one fine-tuning.
: > "$OUT/compare.md"
compare() {  # requirement, editor, extra flags
  local req=$1 ed=$2; shift 2
  stage "compare $req" 90 "$REGOP" --device "$DEVICE" -q compare --zoo "$zoo" --data "$DATA" \
    --requirement "$req" --editor "$ed" --max-models "$CMP_MODELS" --out "$WORK/compare-$req" \
    --force "$@"
  echo "### $req" >> "$OUT/compare.md"
  grep '^|' "$WORK/compare-$req/report.md" 2>/dev/null | head -40 >> "$OUT/compare.md"
}
prune_editor="$zoo/editor-prune/editor.safetensors"
if [ -n "$EDITORS" ]; then prune_editor="$EDITORS/prune/editor.safetensors"; fi
compare prune "$prune_editor"
if [ -n "$EDITORS" ]; then
  compare minimise "$EDITORS/minimise/editor.safetensors" --drop sex,race,relationship,marital-status
  compare fairness "$EDITORS/fairness/editor.safetensors"
fi

for z in zoo zoo-batched zoo-single; do
  cp "$WORK/$z/manifest.json" "$WORK/manifest-$z.json" 2>/dev/null
done
(cd "$WORK" && tar czf - manifest-*.json side-by-side/*.json side-by-side/*.md \
  compare-*/report.md compare-*/*.json zoo/editor-prune/*.json 2>/dev/null) > "$OUT/extra.tgz"
cat "$OUT/engine.txt" "$OUT/side_by_side.md" "$OUT/profile.txt" "$OUT/compare.md" 2>/dev/null
echo
echo "| stage | exit code | wall time |"
echo "|---|---:|---:|"
cat "$stages"
