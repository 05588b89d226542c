"""A trained model, ready to answer: `Model` (core.py) holds a run's encoders and head; `load` (load.py) makes
one of a train run, a finetune run or an exported model directory; `export` (export.py) writes one as a
self-contained model directory; runs.py builds a run's Model and encodes a finetune run's split live for
predict and report (`prepare`, `predict`)."""

from .core import Model  # noqa: F401
from .export import export  # noqa: F401
from .load import is_model_dir, load  # noqa: F401
from .runs import predict, prepare  # noqa: F401
