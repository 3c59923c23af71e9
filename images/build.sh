#!/usr/bin/env bash
# `make image` and `make push-image` (images/README.md).
#   images/build.sh build [trainer|cpu]   docker build -> <name>:<git-sha>      (name: IMAGE_NAME, default tk-lab-<kind>)
#   images/build.sh push  [trainer|cpu]   REGISTRY=host/org: docker push REGISTRY/<name>:<git-sha>
#                                         BEAKER=1: beaker image create --name <name>-<git-sha>
#                                         both: both. Records each reference in images/pushed.jsonl and prints the
#                                         lines a sweep's backend section takes.
# The build refuses when the files that go into the image have uncommitted changes, unless ALLOW_DIRTY=1 (then the
# tag is <git-sha>-dirty). DRY_RUN=1 prints the commands instead of running them. DOCKER overrides `docker`.
set -euo pipefail
cmd="${1:?usage: images/build.sh build|push [trainer|cpu]}"
kind="${2:-trainer}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -f "images/$kind/Dockerfile" ] || { echo "images/build.sh: no images/$kind/Dockerfile (kinds: trainer, cpu)" >&2; exit 2; }
docker="${DOCKER:-docker}"
name="${IMAGE_NAME:-tk-lab-$kind}"

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

# what enters the build context (Dockerfile.dockerignore); pushed.jsonl is a record, not image content
context=(pyproject.toml README.md requirements/lock.txt scripts/install.sh images ni trainer evaluation launcher
         ':(exclude)images/pushed.jsonl')
full="$(git rev-parse --verify HEAD)"
sha="$(git rev-parse --short HEAD)"
tag="$sha"
changes="$(git status --porcelain --untracked-files=normal -- "${context[@]}")"
if [ -n "$changes" ]; then
  if [ "${ALLOW_DIRTY:-0}" != 1 ]; then
    echo "make image: refusing to build from uncommitted changes (the image would not match commit $sha):" >&2
    echo "$changes" | head -20 >&2
    echo "Commit them, or build anyway with ALLOW_DIRTY=1 (tagged $name:$sha-dirty, which submit warns about)." >&2
    exit 1
  fi
  tag="$sha-dirty"
  full="$full-dirty"
fi
image="$name:$tag"
torch="$(sed -n 's/^TORCH_VERSION="\${TORCH_VERSION:-\([^}]*\)}"$/\1/p' scripts/install.sh)"

case "$cmd" in
  build)
    run env DOCKER_BUILDKIT=1 "$docker" build --file "images/$kind/Dockerfile" \
      --build-arg "GIT_SHA=$full" --build-arg "BUILD_DATE=$(git show -s --format=%cI HEAD)" \
      --build-arg "TORCH_VERSION=$torch" ${CUDA_BASE:+--build-arg "CUDA_BASE=$CUDA_BASE"} \
      ${TORCH_CUDA:+--build-arg "TORCH_CUDA=$TORCH_CUDA"} --tag "$image" .
    echo "built $image"
    echo "check: $docker run --rm $image --help   (GPU: $docker run --rm --gpus all $image python -c 'import torch; print(torch.cuda.is_available())')"
    ;;
  push)
    [ -n "${REGISTRY:-}" ] || [ "${BEAKER:-0}" = 1 ] || {
      echo "make push-image: set REGISTRY=host/org (docker push) and/or BEAKER=1 (beaker image create)" >&2; exit 2; }
    [ "${DRY_RUN:-0}" = 1 ] || "$docker" image inspect "$image" >/dev/null 2>&1 || {
      echo "make push-image: no local image $image; run make image first" >&2; exit 1; }
    refs=()
    if [ -n "${REGISTRY:-}" ]; then
      remote="${REGISTRY%/}/$image"
      run "$docker" tag "$image" "$remote"
      run "$docker" push "$remote"
      refs+=("docker=$remote")
    fi
    if [ "${BEAKER:-0}" = 1 ]; then
      bname="$name-$tag"
      run beaker image create --name "$bname" ${BEAKER_WORKSPACE:+--workspace "$BEAKER_WORKSPACE"} "$image"
      account="${BEAKER_ACCOUNT:-}"
      if [ -z "$account" ] && [ "${DRY_RUN:-0}" != 1 ]; then
        account="$(beaker account whoami --format json | python3 -c \
          'import json, sys; d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d; print(d["name"])')"
      fi
      refs+=("beaker=${account:-ACCOUNT}/$bname")
    fi
    echo "# put in the sweep's backend section (make image records the code revision in the tag; submit checks it):"
    for r in "${refs[@]}"; do
      ref="${r#*=}"
      case "$r" in
        docker=*)
          host="${ref%%/*}"; path="${ref#*/}"
          echo "  local:  {container: {kind: docker, image: \"$ref\"}}"
          echo "  slurm:  {container: {kind: pyxis, image: \"$host#$path\"}}   # or: {kind: apptainer, image: \"docker://$ref\"}"
          ;;
        beaker=*) echo "  beaker: {image: \"$ref\"}" ;;
      esac
      line="{\"revision\": \"$full\", \"kind\": \"$kind\", \"image\": \"$image\", \"${r%%=*}\": \"$ref\"}"
      if [ "${DRY_RUN:-0}" = 1 ]; then echo "+ record $line"; else echo "$line" >>images/pushed.jsonl; fi
    done
    ;;
  *) echo "images/build.sh: unknown command '$cmd' (build, push)" >&2; exit 2 ;;
esac
