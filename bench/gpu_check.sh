#!/usr/bin/env bash
# bash bench/gpu_check.sh [--dry-run]
# One GPU, under 10 minutes, no downloads (models built from configs, data generated):
#   1. 1-GPU bf16 training of a T5-XL-shaped random model through our trainer: tokens/s and MFU vs the bf16 peak
#   2. the same model under DeepSpeed ZeRO-2 and ZeRO-3 on that GPU (one torchrun rank each; ZeRO-3 built partitioned)
#   3. prediction examples/s vs Seq2SeqTrainer.predict at equal batch size (8) and at our default (32 vs its 8)
#   4. `python -m launcher rehearse` of a shipped sweep on the GPU, where this checkout has it
# Figures go to stdout and to $GPU_CHECK_OUT (default bench/gpu_check.out/), one JSON line per training mode.
# --dry-run: the same steps with tiny shapes on CPU (seconds; what the tests run), no GPU needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${GPU_CHECK_OUT:-bench/gpu_check.out}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine, or --dry-run" >&2
    exit 2
fi
mkdir -p "$OUT"
if [ "$DRY" = 1 ]; then
    SHAPE=tiny; STEPS=2; WARMUP=1; BATCH=2; PRED=(--steps 2 --test-instances 12 --max-new-tokens 4 --repeats 1)
else
    SHAPE=xl; STEPS=${GPU_CHECK_STEPS:-15}; WARMUP=3; BATCH=${GPU_CHECK_BATCH:-4}; PRED=(--repeats 2)
    "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, torch {torch.__version__}, CUDA {torch.version.cuda}")'
fi
export TOKENIZERS_PARALLELISM=false
step() { echo; echo "== $*"; }

step "1. training, $SHAPE shape, bf16 where native, plain Accelerate (1 GPU)"
"$PY" bench/gpu_train.py --shape "$SHAPE" --stage 0 --steps "$STEPS" --warmup "$WARMUP" --batch-size "$BATCH" \
    --out "$OUT/train-stage0.json"

if "$PY" -c 'import deepspeed' 2>/dev/null; then
    for stage in 2 3; do
        step "2. training, $SHAPE shape, DeepSpeed ZeRO-$stage (1 rank)"
        "$PY" -m torch.distributed.run --nproc_per_node 1 --master_port $((29600 + stage)) bench/gpu_train.py \
            --shape "$SHAPE" --stage "$stage" --steps "$STEPS" --warmup "$WARMUP" --batch-size "$BATCH" \
            --out "$OUT/train-stage$stage.json" 2>"$OUT/zero$stage.err" \
            || { echo "ZeRO-$stage failed:"; tail -20 "$OUT/zero$stage.err"; exit 1; }
    done
else
    step "2. DeepSpeed is not installed here (scripts/install.sh --deepspeed): ZeRO-2/3 skipped"
fi

DATA=${GPU_CHECK_DATA:-../shared/ni-sample}
[ -d "$DATA/tasks" ] || DATA=synthetic
step "3. prediction vs Seq2SeqTrainer.predict, equal batch (8 and 8), data $DATA"
"$PY" bench/bench_trainer.py --data "$DATA" --batch-size 8 --skip-training "${PRED[@]}" | tee "$OUT/predict-equal.txt"
step "3. prediction at our default batch (32) vs Seq2SeqTrainer's default (8)"
"$PY" bench/bench_trainer.py --data "$DATA" --batch-size 32 --their-batch-size 8 --skip-training "${PRED[@]}" \
    | tee "$OUT/predict-default.txt"

if "$PY" -m launcher rehearse --help >/dev/null 2>&1; then
    if [ "$DRY" = 1 ]; then
        step "4. launcher rehearse: skipped in --dry-run (its own tests run it on CPU)"
    else
        step "4. python -m launcher rehearse sweeps/models.yaml --limit 2 (tiny model, the sweep's topology, on this GPU)"
        "$PY" -m launcher rehearse sweeps/models.yaml --limit 2 | tee "$OUT/rehearse.txt"
    fi
else
    step "4. python -m launcher rehearse is not in this checkout: skipped"
fi
echo; echo "gpu_check: done; figures in $OUT/"
