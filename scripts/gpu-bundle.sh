#!/usr/bin/env bash
# Build what a lent GPU machine runs and pack it into .gpubin/ (git-ignored; the device tool's
# `run` carries it with `carry: [".gpubin"]`, 64 MiB at most): the benchmark and the GPU/CPU
# agreement tests, CUDA build, stripped and gzipped. scripts/gpu-measure.sh runs them there.
#
#   scripts/gpu-bundle.sh        # then: run(command="scripts/gpu-measure.sh", carry=[".gpubin"])
set -euo pipefail
cd "$(dirname "$0")/.."
make cuda
eval "$(scripts/cuda-toolchain.sh "${CUDA_TOOLCHAIN:-$HOME/.cache/ctpipe-cuda13}")"
test_bin=$(cargo test --release --features cuda -p ctpipe --test gpu_agreement --no-run --target-dir target/cuda 2>&1 \
  | sed -n 's/.*Executable tests\/gpu_agreement.rs (\(.*\))/\1/p')
[ -x "$test_bin" ] || { echo "gpu-bundle: no gpu_agreement test binary was built" >&2; exit 1; }
rm -rf .gpubin && mkdir -p .gpubin
for pair in "target/cuda/release/bench:bench" "$test_bin:gpu_agreement"; do
  strip -o ".gpubin/${pair##*:}" "${pair%%:*}"
  gzip -9 ".gpubin/${pair##*:}"
done
du -ch .gpubin/* | sed 's/^/gpu-bundle: /' >&2
