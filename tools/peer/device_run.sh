#!/usr/bin/env bash
# Every benchmark of regop against the PyTorch + PyTorch Geometric peer, in one run on one
# device: an Adult zoo, a prune editor trained on it, the engine benchmarks, the side-by-side
# tables (tools/peer/side_by_side.py) and a per-kernel profile. Results go to $OUT (default
# ./device-run).
#
# On a GPU machine, after ../shared/gpu/prepare.sh has filled .gpu/ here and the Adult files
# were copied to .gpu/data/adult:
#     bash .gpu/on-device.sh bash tools/peer/device_run.sh
# On this machine's CPU backend (small, to try the script):
#     DEVICE=cpu MODELS=24 STEPS=20 BATCHES=1,4 ITERS=3 CMP_MODELS=3 bash tools/peer/device_run.sh
# Editors trained elsewhere on Adult (EDITORS=DIR holding minimise/, fairness/ and prune/, each
# with its editor.safetensors) are compared with the baselines on the device too: the time of
# one edit against one fine-tuning, on the same device.
set -euo pipefail
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
mkdir -p "$OUT"
zoo="$OUT/zoo"
t() { local s=$(date +%s%N); "$@"; echo "  ($(( ($(date +%s%N) - s) / 1000000 )) ms)" >&2; }

echo "== device" >&2
"$REGOP" --device "$DEVICE" info | tee "$OUT/info.txt" >&2
echo "== engine benchmarks" >&2
"$REGOP" --device "$DEVICE" --json bench > "$OUT/engine.json"
"$REGOP" --device "$DEVICE" bench | tee "$OUT/engine.txt" >&2
echo "== zoo: $MODELS Adult models" >&2
t "$REGOP" --device "$DEVICE" zoo --data "$DATA" --count "$MODELS" --out "$zoo" --force >&2
echo "== prune editor: $STEPS steps" >&2
t "$REGOP" --device "$DEVICE" train --zoo "$zoo" --data "$DATA" --requirement prune \
  --steps "$STEPS" --eval-every "$STEPS" --force >&2
echo "== side by side" >&2
python3 tools/peer/side_by_side.py --regop "$REGOP" --device "$DEVICE" \
  --editor "$zoo/editor-prune/editor.safetensors" --zoo "$zoo" --data "$DATA" \
  --batches "$BATCHES" --iters "$ITERS" --out "$OUT/side-by-side" > "$OUT/side_by_side.md"
echo "== per-kernel profile of one edit and one training step" >&2
"$REGOP" --device "$DEVICE" bench --editor "$zoo/editor-prune/editor.safetensors" --zoo "$zoo" \
  --data "$DATA" --batches 1 --iters 5 --profile > "$OUT/profile.txt"
echo "== each editor against the baselines, timed on the device" >&2
compare() {  # requirement, editor, extra flags
  local req=$1 ed=$2; shift 2
  t "$REGOP" --device "$DEVICE" -q compare --zoo "$zoo" --data "$DATA" --requirement "$req" \
    --editor "$ed" --max-models "$CMP_MODELS" --out "$OUT/compare-$req" --force "$@" >&2
  echo "### $req" >> "$OUT/compare.md"
  grep '^|' "$OUT/compare-$req/report.md" | head -40 >> "$OUT/compare.md"
}
: > "$OUT/compare.md"
prune_editor="$zoo/editor-prune/editor.safetensors"
if [ -n "$EDITORS" ]; then prune_editor="$EDITORS/prune/editor.safetensors"; fi
compare prune "$prune_editor"
if [ -n "$EDITORS" ]; then
  compare minimise "$EDITORS/minimise/editor.safetensors" --drop sex,race,relationship,marital-status
  compare fairness "$EDITORS/fairness/editor.safetensors"
fi
cat "$OUT/engine.txt"
cat "$OUT/side_by_side.md"
cat "$OUT/profile.txt"
cat "$OUT/compare.md"
