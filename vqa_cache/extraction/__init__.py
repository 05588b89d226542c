"""Stage one (`vqa-cache extract`): the encoders run once and write the cache entries of a plan.

stage.py: extract(); images.py and questions.py: the two entries; writer.py: shard writing and the
one-process / torchrun write protocol; resume.py: what a re-run continues from; dry_run.py: estimates.
"""

from .dry_run import dry_run  # noqa: F401
from .stage import extract  # noqa: F401
