#!/usr/bin/env bash
# The GPU check of the CUDA client, as one script (not run by CI): on a machine with an NVIDIA
# driver and the Rust toolchain, from the repository root. Builds offline, runs the CUDA tests
# and the GPU benchmark; logs and JSON go to $OUT (default target/gpu-check).
set -euo pipefail
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" # driver 580 = CUDA 13.0
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.csv" || true
cargo test --release --offline -p sparsity-kernels-cuda --features cuda -- --test-threads=1 2>&1 \
  | tee "$out/tests.log"
cargo run --release --offline -p sparsity-kernels-cuda --features cuda --example gpu_bench -- \
  "$out/gpu_bench.json" 2>&1 | tee "$out/bench.txt"
