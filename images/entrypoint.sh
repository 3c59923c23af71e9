#!/bin/sh
# The images' entry point: the trainer CLI.
#   docker run IMAGE run --config /run/config.yaml    ->  python -m trainer run --config /run/config.yaml
#   docker run IMAGE -m trainer run --config ...       ->  python -m trainer run --config ...  (the launcher's
#                                                          local `docker run` passes python's arguments)
#   docker run IMAGE python|bash|sh|torchrun|accelerate|deepspeed ...  ->  that program
# Beaker, pyxis and Apptainer name their own command and never run this.
set -e
case "${1:-}" in
  -m|-c) exec python "$@" ;;
  python|python3|bash|sh|torchrun|accelerate|deepspeed) exec "$@" ;;
  *) exec python -m trainer "$@" ;;
esac
