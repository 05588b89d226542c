"""Experiment tracking, opt-in (`--log tensorboard|mlflow|wandb`, the API's `log=`): the fit loop tells a
Callbacks what happens (base.py says when and what is logged), session.py opens and closes a run's trackers,
and each tracker writes with its library's own writer (writers.py; the library imported only when a run
asks for it)."""

from .base import TRACKERS, Callback, check_names, epoch_values, params_of  # noqa: F401
from .session import NONE, Callbacks, session  # noqa: F401
