"""The trackers, each through its library's own writer:

- tensorboard: torch.utils.tensorboard.SummaryWriter into the run directory itself (`tensorboard --logdir
  runs` shows each run under its name); scalars as double-precision tensors, so they read back exactly
  as metrics.json has them; the params as the HParams plugin's session.
- mlflow: MlflowClient (no global active run, so a sweep's parallel trials each have their own run) at
  $MLFLOW_TRACKING_URI, else the local folder ./mlruns (file:, which MLflow 3 keeps behind
  MLFLOW_ALLOW_FILE_STORE: set here for that default only); experiment $MLFLOW_EXPERIMENT_NAME or
  "vqa-cache".
- wandb: wandb.init in the run directory, offline unless $WANDB_MODE says otherwise (`wandb sync` uploads
  later); project $WANDB_PROJECT or "vqa-cache"; step/train_loss against "step", the epoch's values
  against "epoch".
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .base import Callback, epoch_values, params_of


def make(name: str, label: str | None) -> Callback:
    return {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}[name](label)


class TensorBoard(Callback):
    def __init__(self, label):
        self.writer = None

    def start(self, run_dir: Path, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(run_dir))
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params_of(config).items()}
        experiment, start, self.end_info = hparams(params, {"val_accuracy": 0.0})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step, new_style=True, double_precision=True)

    def steps(self, first, losses):
        for i, loss in enumerate(losses):
            self.scalar("step/train_loss", loss, first + i)

    def epoch(self, row):
        for tag, value in epoch_values(row).items():
            self.scalar(tag, value, row["epoch"])
        self.writer.flush()

    def close(self, status):
        if self.writer is not None:
            self.writer.file_writer.add_summary(self.end_info)
            self.writer.close()


EXPERIMENTS = threading.Lock()  # get-or-create of an MLflow experiment, one thread at a time


class MLflow(Callback):
    def __init__(self, label):
        self.label, self.client, self.run_id = label, None, None

    def start(self, run_dir: Path, config: dict) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path("mlruns").resolve().as_uri()
        self.client = client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "vqa-cache"
        with EXPERIMENTS:  # a sweep's parallel trials (threads) must not both create the experiment
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run = client.create_run(
            experiment_id, run_name=self.label or run_dir.name, tags={"run_dir": str(run_dir.resolve())}
        )
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in params_of(config).items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params a call
            client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, points) -> None:
        """points: (key, value, step) triples, in batches of at most 1000 (log_batch's limit)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v, step in points]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def steps(self, first, losses):
        self.log(("step/train_loss", loss, first + i) for i, loss in enumerate(losses))

    def epoch(self, row):
        self.log((k, v, row["epoch"]) for k, v in epoch_values(row).items())

    def close(self, status):
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


class WandB(Callback):
    def __init__(self, label):
        self.label, self.run = label, None

    def start(self, run_dir: Path, config: dict) -> None:
        import wandb

        self.run = run = wandb.init(
            mode=os.environ.get("WANDB_MODE") or "offline",  # type: ignore[arg-type]
            dir=str(run_dir),
            project=os.environ.get("WANDB_PROJECT") or "vqa-cache",
            name=self.label or run_dir.name,
            config=params_of(config),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", disable_git=True),
        )
        run.define_metric("step")
        run.define_metric("step/*", step_metric="step")
        run.define_metric("epoch")
        self.defined = set()

    def steps(self, first, losses):
        for i, loss in enumerate(losses):
            self.run.log({"step": first + i, "step/train_loss": loss})

    def epoch(self, row):
        values = epoch_values(row)
        for key in set(values) - self.defined:
            self.run.define_metric(key, step_metric="epoch")
            self.defined.add(key)
        self.run.log({"epoch": row["epoch"], **values})

    def close(self, status):
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
