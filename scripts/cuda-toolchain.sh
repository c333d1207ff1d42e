#!/usr/bin/env bash
# A CUDA 13.0 build toolchain for `make cuda` on a machine without a CUDA toolkit (or a GPU):
# nvcc, headers and the runtime libraries from pinned PyPI wheels, installed into DIR.
#
#   eval "$(scripts/cuda-toolchain.sh DIR)"
#
# Idempotent. Stdout carries only the `export` lines to eval; messages go to stderr.
# Why 13.0 exactly: the GPU machines' 580 driver cannot JIT PTX from nvcc 13.1 and newer, and
# cudarc 0.19 refuses to build against much newer toolkits. Change the pins only with those.
set -euo pipefail
dir=${1:?usage: cuda-toolchain.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cuda=$dir/nvidia/cu13
say() { echo "cuda-toolchain: $*" >&2; }

pins=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
)

installed() {
  [ -x "$cuda/bin/nvcc" ] || return 1
  local p name
  for p in "${pins[@]}"; do
    name=${p%%==*}
    [ -d "$dir/${name//-/_}-${p##*==}.dist-info" ] || return 1
  done
}

if ! installed; then
  say "installing the pinned CUDA 13.0 wheels into $dir (about 1.2 GB)"
  # One pip call merges the wheels' shared nvidia/ tree; --upgrade repairs a partial install.
  python3 -m pip install --quiet --no-deps --upgrade --target "$dir" "${pins[@]}" >&2
fi
release=$("$cuda/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
[ "$release" = 13.0 ] || { say "nvcc in $cuda is release '$release', not 13.0"; exit 1; }

# The wheels ship versioned sonames only; the linker looks for the plain names.
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  [ -e "$cuda/lib/$lib" ] || { say "$cuda/lib/$lib is missing"; exit 1; }
  ln -sfn "$lib" "$cuda/lib/${lib%%.so.*}.so"
done

# The driver library (libcuda.so.1) comes with the GPU driver, never in a wheel. Link against a
# stub exporting every driver function cudarc binds; the GPU machine's real one loads at run
# time. The names come from cudarc's sources in the cargo registry (`cargo fetch` first).
registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
names=$(grep -rhoE 'pub (unsafe )?fn cu[A-Za-z0-9_]+' "$registry"/*/cudarc-0.19.*/src/driver/sys 2>/dev/null \
  | sed -E 's/pub (unsafe )?fn //' | grep -vx culib | sort -u || true)
[ -n "$names" ] || { say "cudarc 0.19 is not in $registry: run \`cargo fetch\` first"; exit 1; }
stub=$cuda/lib/stubs
mkdir -p "$stub"
if [ ! -f "$stub/libcuda.so" ] || [ "$names" != "$(cat "$stub/names.txt" 2>/dev/null)" ]; then
  src=$(mktemp --suffix=.c)
  trap 'rm -f "$src"' EXIT
  printf '%s\n' "$names" | sed 's/.*/int &(void) { return 999; }/' > "$src"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$src"
  printf '%s\n' "$names" > "$stub/names.txt"
  say "libcuda stub with $(printf '%s\n' "$names" | wc -l) driver functions"
fi
say "nvcc $release ready in $cuda"

cat <<EXPORTS
export CUDA_HOME="$cuda"
export PATH="$cuda/bin:\$PATH"
export LIBRARY_PATH="$cuda/lib:$stub\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EXPORTS
