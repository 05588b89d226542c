"""`vqa-cache finetune`: the heads of stage two trained end to end through live encoders (no cache), by the
same fit loop as `train` (vqa_cache/training/loop.py): the same samples, answer vocabulary, heads, loss,
schedule, early stopping and run directory. What differs (FinetuneFit):

- images are decoded once into one uint8 tensor [N_img, 3, S, S] (the same resize as `extract`), and
  each batch encodes each distinct image (and question text) once, then indexes the features;
- what trains (scope.py: none | top:N | all, or LoRA adapters), with its own learning rate
  (finetune.encoder_lr; the head's is optim.lr), the same warm-up + cosine;
- gradient accumulation (finetune.accumulate), gradient checkpointing, augmentation (augment.py);
- `init_head` starts the head from a cached `train` run (init_head.py);
- checkpoints hold the head plus the trained encoder weights (or only the LoRA adapters), so `--resume`
  continues exactly;
- under torchrun, DistributedDataParallel with `train`'s batch split, batches cut between images with
  group_by_image, trained BatchNorm layers on the global batch's statistics (ddp.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import distributed as dist
from .. import messages, tracking
from ..device import pick_device
from ..recipes import FinetuneRecipe
from ..rundir import run_config, run_directory, write_config
from ..threads import describe, flush_denormals
from ..training.batches import Rows
from ..training.loop import Fit, run_fit
from ..training.parts import FitParts
from ..training.steps import HostTally, evaluate
from .augment import augment_line, describe_augment, new_counts
from .ddp import wrap_ddp
from .init_head import init_head
from .model import FinetuneModel, build, encoder_state, load_encoder_state


def finetune(
    recipe: FinetuneRecipe, out: str | None = None, resume: bool = False, extend: str | None = None, log=()
) -> dict:
    """Fine-tune end to end; returns the metrics dict. Under torchrun: as `train` (run_fit), with the
    accumulated micro-batches syncing gradients only on the last one; every rank decodes the images itself.
    log: tracker names (tensorboard, mlflow, wandb; vqa_cache/tracking/)."""
    with (
        run_directory(recipe, out, resume) as run_dir,
        tracking.session(log if dist.is_main() else ()) as callbacks,
    ):  # (rank 0 logs)
        started = time.time()
        flush_denormals()
        fit = FinetuneFit(recipe, run_dir)
        fit.callbacks = callbacks
        return run_fit(fit, resume, started=started, extend=extend)


class FinetuneFit(Fit):
    model: FinetuneModel
    recipe: FinetuneRecipe
    mode = "finetune"
    unit = "batch"  # a step may take several (accumulate)
    tally = HostTally
    lr_names = ("lr", "encoder_lr")
    record_train_seconds = True

    def __init__(self, recipe: FinetuneRecipe, run_dir: Path):
        self.settings, optim = recipe.finetune, recipe.optim
        device = dist.device(pick_device(recipe.device).type)
        self.plan, parts, model = build(recipe, device)
        splits, vocab = parts.splits, parts.vocab
        head_config = model.head_config
        encoder_params = model.encoder_parameters()
        groups = [{"params": list(model.head.parameters()), "lr": optim.lr, "name": "head"}]
        if encoder_params:
            groups.append({"params": encoder_params, "lr": self.settings.encoder_lr, "name": "encoders"})
        self.encoder_params = sum(p.numel() for p in encoder_params)
        config = {
            "mode": "finetune",
            **run_config(recipe, self.plan.cache_keys, parts.names, vocab, splits, parts.dropped, head_config, device),
        }
        config["encoders"] = {
            "image": self.plan.image_choice.identity,
            "text": self.plan.text_choice.identity,
            "train_image": model.image_enc.scope,
            "train_text": model.text_enc.scope,
            "lora_r": self.settings.lora_r,
            "lora_targets": len(model.image_enc.lora) + len(model.text_enc.lora),
            "trainable_encoder_params": self.encoder_params,
        }
        super().__init__(
            FitParts(
                recipe=recipe,
                run_dir=run_dir,
                device=device,
                splits=splits,
                vocab=vocab,
                model=model,
                head=model.head,
                image=Rows(),
                question=Rows(),
                cache_keys=self.plan.cache_keys,
                head_config=head_config,
                param_groups=groups,
                config=config,
                accumulate=self.settings.accumulate,
                eval_batch_size=self.settings.eval_batch_size,
                group_by_image=self.settings.group_by_image,
            )
        )

    def describe(self) -> str:
        settings, model = self.settings, self.model
        head_params = sum(p.numel() for p in model.head.parameters())
        return (
            f"run {self.run_dir}: finetune, head {self.recipe.head.name} ({head_params / 1e6:.2f}M params), "
            f"image encoder {self.plan.image_choice.encoder} [{model.image_enc.scope}], text "
            f"{self.plan.text_choice.identity} [{model.text_enc.scope}], "
            f"{f'LoRA r={settings.lora_r}, ' if settings.lora_r else ''}"
            f"{self.encoder_params / 1e6:.2f}M trainable encoder params, {len(self.vocab)} answers, "
            f"{len(self.rows)} train / {len(self.splits['val'])} val questions, batch "
            f"{self.recipe.optim.batch_size} x {settings.accumulate}, device {self.device}, precision "
            f"{self.precision}, {describe()}"
            + (f", {describe_augment(model.augment)}" if model.augment is not None else "")
        )

    def epoch_extra(self) -> dict:
        """The epoch's augmentation tally (augment.py), said in one line and kept in the metrics row."""
        model = self.model
        if model.augment is None:
            return {}
        counts, model.augmented = model.augmented, new_counts()
        if dist.is_main():
            messages.info(augment_line(counts, model.augment.question_rules))
        return {"augmented": counts}

    def start(self) -> None:
        if self.settings.init_head:
            self.config["init_head"] = init_head(
                self.model, self.settings.init_head, self.vocab, self.head_config, self.plan, self.recipe
            )

    def before_epochs(self, resume: bool) -> None:
        """With --init-head: the head's accuracy through the live (not yet trained) encoders, as epoch 0."""
        if not self.settings.init_head or resume or not dist.is_main():
            return
        accuracy = evaluate(
            self.model, self.splits["val"], self.image, self.question, self.eval_batch_size, len(self.vocab), self.ctx
        ).accuracy
        messages.info(f"epoch   0  val acc {accuracy:.4f} (head from {self.settings.init_head}, live encoders)")
        self.config["init_head_val_accuracy"] = round(accuracy, 6)
        write_config(self.run_dir, self.config)

    def seed_rank(self, start_epoch: int) -> None:
        super().seed_rank(start_epoch)  # and own augmentation draws
        self.model.gen.manual_seed(self.recipe.seed * 1_000_033 + dist.rank() * 7919 + start_epoch)

    def wrap_ddp(self) -> torch.nn.Module:
        probe = self.rows[:2]
        split = self.splits["train"]
        return wrap_ddp(self.model, self.device, split.img_row[probe], split.q_row[probe])

    def global_batch(self, image, question) -> torch.Tensor | None:
        """`image` holds the batch's image rows: BatchNorm needs their number (LiveImage), and with
        group_by_image the ranks' parts are cut between images, so each image is encoded by one rank."""
        self.model.image_enc.batch_images = len(torch.unique(image))
        return image if self.group_by_image else None

    def load_weights(self, ckpt: dict, path: Path) -> None:
        super().load_weights(ckpt, path)
        load_encoder_state(self.model, ckpt["encoders"], path)

    def checkpoint_extra(self) -> dict:
        return {
            "mode": "finetune",
            "encoders": encoder_state(self.model),
            "aug_rng": self.model.gen.get_state(),
            "init_head": self.config.get("init_head"),
        }

    def restore(self, ckpt: dict) -> None:
        self.model.gen.set_state(ckpt["aug_rng"])
        self.config["init_head"] = ckpt.get("init_head")
