#!/usr/bin/env bash
# Install the project into the active Python environment (a venv, or a container image's Python).
#   scripts/install.sh [--dev] [--deepspeed] [--gpu|--cpu] [--locked] [--deps-only]
# One script for people, CI and the container images, so what CI tests is what the images run.
#  - --locked: every package at the version in requirements/lock.txt (used as pip constraints; regenerate it
#    with scripts/lock.sh after changing pyproject's dependencies). The images always install --locked.
#  - --deps-only: everything but the project itself (the images install dependencies in a layer of their own,
#    cached across code changes, then run this script again without it).
#  - torch is installed first, pinned, so the project's `torch>=` floor never pulls another build:
#    on GPU machines the CUDA wheel from PyPI; on CPU machines set TORCH_INDEX_URL to a CPU-wheel index
#    (machines whose pip is configured with a local CPU wheel, like ours, need nothing).
#    TORCH_CUDA=cu126 (or cu128, cu130, ...) picks the CUDA build of torch from the PyTorch wheel index instead of
#    PyPI's default (cu12x for drivers older than 580 or V100 nodes); the lock still pins torch's version, and the
#    CUDA runtime wheels come with that build.
#  - DeepSpeed builds against that torch, so it is installed without build isolation (always on GPU machines;
#    with --deepspeed on CPU machines, where its CPU accelerator runs ZeRO for tests; ops JIT-compile on first use).
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
dev=0
deepspeed=0
locked=0
deps_only=0
mode=auto
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --deepspeed) deepspeed=1 ;;
    --gpu) mode=gpu ;;
    --cpu) mode=cpu ;;
    --locked) locked=1 ;;
    --deps-only) deps_only=1 ;;
    *) echo "install.sh: unknown option '$arg' (valid: --dev --deepspeed --gpu --cpu --locked --deps-only)" >&2; exit 2 ;;
  esac
done
if [ -n "${TORCH_CUDA:-}" ] && ! [[ "$TORCH_CUDA" =~ ^cu[0-9]{3}$ ]]; then  # before any download
  echo "install.sh: TORCH_CUDA must name a CUDA build of torch like cu126 or cu130 (got '$TORCH_CUDA'). For example: TORCH_CUDA=cu126" >&2
  exit 2
fi
if [ "$mode" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
python -m pip install --quiet --upgrade pip

lock=()
if [ "$locked" = 1 ]; then
  lock=(--constraint "${here}/requirements/lock.txt")
  echo "install.sh: locked versions from requirements/lock.txt"
fi

torch_args=("torch==${TORCH_VERSION}")
if [ -n "${TORCH_CUDA:-}" ]; then
  [ "$mode" = cpu ] && echo "install.sh: TORCH_CUDA=$TORCH_CUDA on a machine without GPUs: installing that CUDA build anyway" >&2
  mode=gpu
  TORCH_INDEX_URL="https://download.pytorch.org/whl/${TORCH_CUDA}"
  # --index-url: torch and its CUDA runtime wheels from that build's index (which mirrors their other dependencies)
  torch_args+=(--index-url "$TORCH_INDEX_URL")
elif [ "$mode" = cpu ] && [ -n "${TORCH_INDEX_URL:-}" ]; then
  # locked: torch's own dependencies still come from PyPI at their locked versions (the CPU build, 2.x.y+cpu,
  # sorts above 2.x.y and satisfies the lock's torch==2.x.y)
  if [ "$locked" = 1 ]; then torch_args+=(--extra-index-url "$TORCH_INDEX_URL"); else torch_args+=(--index-url "$TORCH_INDEX_URL"); fi
fi
echo "install.sh: torch ${TORCH_VERSION} (${mode}${TORCH_CUDA:+, $TORCH_CUDA})"
python -m pip install --quiet "${lock[@]}" "${torch_args[@]}"

extras=""
[ "$dev" = 1 ] && extras="dev"
if [ "$deps_only" = 1 ]; then
  echo "install.sh: project dependencies${extras:+ [$extras]} (not the project)"
  mapfile -t deps < <(python - "${here}/pyproject.toml" "$extras" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    deps += project["optional-dependencies"][extra]
print("\n".join(d for d in deps if not d.startswith("torch")))
PY
)
  python -m pip install --quiet "${lock[@]}" "${deps[@]}"
else
  echo "install.sh: project${extras:+ [$extras]}"
  python -m pip install --quiet "${lock[@]}" -e "${here}${extras:+[$extras]}"
fi

if [ "$mode" = gpu ] || [ "$deepspeed" = 1 ]; then
  echo "install.sh: deepspeed (no build isolation, against the installed torch; ops compiled on first use)"
  DS_BUILD_OPS=0 python -m pip install --quiet "${lock[@]}" --no-build-isolation "deepspeed>=0.15"
fi
python -c 'import torch, transformers; print(f"install.sh: ok (torch {torch.__version__}, transformers {transformers.__version__}, cuda={torch.cuda.is_available()})")'
