"""Stage two (`vqa-cache train`): fusion heads trained on cached features, never running an encoder.

cached.py: train() and its Fit; loop.py: the one fit loop (finetune runs it too); features.py: the cache
entries a run reads; splits.py, batches.py, steps.py: data, batches and the step; checkpoints.py and
run_dir.py: what a run writes. A run directory holds config.json, metrics.json, best.pt, last.pt,
curves.png, predictions.json (and .lock while a process writes it).
"""
from .cached import train  # noqa: F401
