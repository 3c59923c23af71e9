#!/usr/bin/env bash
# Install the project into the active Python environment (a venv, or a container image's Python).
#   scripts/install.sh [--dev] [--deepspeed] [--gpu|--cpu]
# One script for people, CI and the container images, so what CI tests is what the images run.
#  - torch is installed first, pinned, so the project's `torch>=` floor never pulls another build:
#    on GPU machines the CUDA wheel from PyPI; on CPU machines set TORCH_INDEX_URL to a CPU-wheel index
#    (machines whose pip is configured with a local CPU wheel, like ours, need nothing).
#  - DeepSpeed builds against that torch, so it is installed without build isolation (always on GPU machines;
#    with --deepspeed on CPU machines, where its CPU accelerator runs ZeRO for tests; ops JIT-compile on first use).
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
dev=0
deepspeed=0
mode=auto
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --deepspeed) deepspeed=1 ;;
    --gpu) mode=gpu ;;
    --cpu) mode=cpu ;;
    *) echo "install.sh: unknown option '$arg' (valid: --dev --deepspeed --gpu --cpu)" >&2; exit 2 ;;
  esac
done
if [ "$mode" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
python -m pip install --quiet --upgrade pip

torch_args=("torch==${TORCH_VERSION}")
if [ "$mode" = cpu ] && [ -n "${TORCH_INDEX_URL:-}" ]; then
  torch_args+=(--index-url "$TORCH_INDEX_URL")
fi
echo "install.sh: torch ${TORCH_VERSION} (${mode})"
python -m pip install --quiet "${torch_args[@]}"

extras=""
[ "$dev" = 1 ] && extras="dev"
echo "install.sh: project${extras:+ [$extras]}"
python -m pip install --quiet -e "${here}${extras:+[$extras]}"

if [ "$mode" = gpu ] || [ "$deepspeed" = 1 ]; then
  echo "install.sh: deepspeed (no build isolation, against the installed torch; ops compiled on first use)"
  DS_BUILD_OPS=0 python -m pip install --quiet --no-build-isolation "deepspeed>=0.15"
fi
python -c 'import torch, transformers; print(f"install.sh: ok (torch {torch.__version__}, transformers {transformers.__version__}, cuda={torch.cuda.is_available()})")'
