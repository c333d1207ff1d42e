#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpubin/ from scripts/gpu-bundle.sh:
# the GPU/CPU agreement tests, then the benchmarks against PyTorch (docs/perf.md): the ECT
# training step and 1-step sampling of cifar-ddpmpp, and FID Inception-v3 features. Logs go to $OUT (the device tool brings them back). Runs both even if the
# first fails; exits non-zero if either did.
set -uo pipefail
out=${OUT:-/tmp/ctpipe-gpu}
mkdir -p "$out"
for gz in .gpubin/*.gz; do
  gunzip -c "$gz" > "${gz%.gz}" && chmod +x "${gz%.gz}"
done
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
status=0
.gpubin/gpu_agreement --test-threads 1 --nocapture 2>&1 | tee "$out/gpu_agreement.log" || status=1
.gpubin/bench train-step cifar-ddpmpp "${BATCH:-128}" "${STEPS:-20}" cuda fp32,tf32,bf16 2>&1 | tee "$out/bench.log" || status=1
.gpubin/bench inception cuda 256 2>&1 | tee "$out/inception.log" || status=1
exit $status
