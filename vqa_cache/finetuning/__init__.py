"""`vqa-cache finetune`: end-to-end training through live encoders, by train's fit loop.

run.py: finetune() and its Fit; model.py: the model and its inputs; live.py: the live encoders; scope.py:
what trains; augment.py; ddp.py: torchrun; init_head.py: --init-head.
"""

from .run import finetune  # noqa: F401
