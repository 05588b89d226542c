#!/usr/bin/env bash
# The CUDA figures of docs/benchmarks.md, in one go, on a machine with one GPU and PyTorch installed
# (no network needed: random-init encoders, bag-of-words text; easy_vqa on PYTHONPATH if not installed).
# Usage: bash bench/gpu.sh [LOGDIR]
set -u
LOG=${1:-/tmp/vqa-gpu}; mkdir -p "$LOG"
export HF_HUB_OFFLINE=1 VQA_CACHE_OFFLINE=1 VQA_CACHE_HOME=$LOG/cache PYTHONUNBUFFERED=1
V="python3 -m vqa_cache"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
TIMEFORMAT="wall %R s"
step() { echo; echo "== $*"; { time "$@" 2>&1 | grep -av "it/s\]\|img/s\]\|q/s\]\|batch/s" ; } 2>&1; }

# stage one: the default recipe (64 px) and natural-image size (224 px), ResNet50 pooled
step $V extract extract/resnet50-tinybert-concat.toml --workers 8 --batch-size 256
step $V extract extract/resnet50-tinybert-concat.toml --workers 8 --batch-size 256 --image-size 224
# stage two on each cache
step $V train train/resnet50-tinybert-concat.toml --out $LOG/runs/concat64
step $V train train/resnet50-tinybert-concat.toml --image-size 224 --out $LOG/runs/concat224
# end to end: ResNet18 from random init trained whole (the finetune recipe)
step $V finetune train/easyvqa-finetune.toml --out $LOG/runs/finetune --set finetune.workers=8
# benchmark ratios at 224 px
step python3 bench/train.py --image-size 224 --weights random --text-encoder bow --workers 8
# trials' heads stacked into one (torch.func) against one after another: VQA v2 shape, then bench/scale.py's
step python3 bench/stacked_heads.py --device cuda
step python3 bench/stacked_heads.py --device cuda --image-dim 512 --question-dim 1024 --answers 1000 --hidden 256
for r in $LOG/runs/*; do cp "$r/metrics.json" "$LOG/$(basename $r)-metrics.json" 2>/dev/null; done
