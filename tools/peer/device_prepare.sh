#!/usr/bin/env bash
# Fills .gpu/ for tools/peer/device_run.sh, on this machine, from the project root:
#   release binaries and the Vulkan loader (../shared/gpu/prepare.sh), the Adult files, the
#   GPU test binaries (stripped, packed: they are 45 MB unpacked) and, when given, the
#   editors the run compares with the baselines.
# Usage: bash tools/peer/device_prepare.sh [PRUNE_EDITOR MINIMISE_EDITOR FAIRNESS_EDITOR]
# Then, on the GPU machine: carry [".gpu"],
#   command: bash .gpu/on-device.sh bash tools/peer/device_run.sh
set -euo pipefail
bash ../shared/gpu/prepare.sh
mkdir -p .gpu/data
rm -rf .gpu/data/adult && cp -r ../shared/datasets/adult .gpu/data/
# The test binaries whose tests run kernels on the GPU against the CPU reference.
cargo test --release --no-run 2>&1 | tail -1
rm -rf .gpu/tests .gpu/tests.tar.xz && mkdir -p .gpu/tests
for t in kernels graph_kernels layers shaders mlp gradcheck editor edit signals; do
  bin=$(ls -t target/release/deps/"$t"-* | grep -v '\.d$' | head -1)
  cp "$bin" ".gpu/tests/$t" && strip ".gpu/tests/$t"
done
tar cJf .gpu/tests.tar.xz -C .gpu tests && rm -rf .gpu/tests
if [ $# -eq 3 ]; then
  for pair in "prune:$1" "minimise:$2" "fairness:$3"; do
    mkdir -p ".gpu/editors/${pair%%:*}" && cp "${pair#*:}" ".gpu/editors/${pair%%:*}/editor.safetensors"
  done
fi
du -sh .gpu
