#!/usr/bin/env bash
# Fine-tuning figures of docs/benchmarks.md on one GPU: finetune vs train seconds per epoch (bench/finetune.py),
# and batch 2 x --accumulate 32 against batch 64 (same data, seed and question order), per-epoch losses.
# Usage: bash bench/gpu-finetune.sh [LOGDIR]
set -u
LOG=${1:-/tmp/vqa-gpu-ft}; mkdir -p "$LOG"
export HF_HUB_OFFLINE=1 VQA_CACHE_OFFLINE=1 VQA_CACHE_HOME=$LOG/cache PYTHONUNBUFFERED=1
V="python3 -m vqa_cache"
TIMEFORMAT="wall %R s"
step() { echo; echo "== $*"; { time "$@" 2>&1 | grep -av "it/s\]\|img/s\]\|q/s\]\|batch/s" ; } 2>&1; }

step python3 bench/finetune.py --device cuda --image-fraction 0.25 --epochs 3 --cache-dir $LOG/cache
SUB="--set features.dataset.image_fraction=0.2 --set finetune.group_by_image=false --epochs 4 --seed 0"
step $V finetune train/easyvqa-finetune.toml $SUB --batch-size 64 --out $LOG/runs/b64
step $V finetune train/easyvqa-finetune.toml $SUB --batch-size 2 --accumulate 32 --out $LOG/runs/b2x32
python3 - "$LOG" <<'PY'
import json, sys
for name in ("b64", "b2x32"):
    m = json.load(open(f"{sys.argv[1]}/runs/{name}/metrics.json"))
    print(name, " ".join(f"{e['epoch']}: {e['train_loss']:.4f}/{e['val_loss']:.4f}/{e['val_accuracy']:.4f}" for e in m["epochs"]))
PY
