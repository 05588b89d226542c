"""Stage two (`vqa-cache train`): fusion heads trained on cached features, never running an encoder.

cached.py: train() and its Fit; loop.py: the one fit loop (finetune runs it too); features.py: the cache
entries a run reads; splits.py, batches.py, steps.py: data, batches and the step; what a run writes,
it writes through the run contract, vqa_cache/rundir/ (docs/run-format.md).
"""

from .cached import train  # noqa: F401
