"""The recipe dataclasses: a recipe is made of sections (DatasetSettings, ImageSettings, ...), each a frozen
dataclass whose defaults are the documented ones. build.py makes them from TOML data, with checks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetSettings:
    name: str = "easyvqa"  # easyvqa | vqa2:DIR | vizwiz:DIR | csv:DIR
    splits: tuple = ()  # () = every split the dataset has
    limit: int = 0  # at most N questions per split (0 = all)
    answer_types: tuple = ()  # keep only these answer types, e.g. ("yes/no",)
    image_fraction: float = 1.0  # sample this share of images, keep all their questions
    val_fraction: float = 0.1  # held-out share of images when a dataset has no val split
    seed: int = 0  # for the two samplings above
    skip_missing: bool = False  # drop questions whose image file is missing
    options: dict = field(default_factory=dict)  # adapter-specific (csv column names, ...)


@dataclass(frozen=True)
class ImageSettings:
    encoder: str = "resnet50"  # torchvision NAME (or torchvision:NAME), hf:ID_OR_DIR, timm:NAME
    weights: str = "auto"  # auto | pretrained | random | PATH to a state dict
    features: str = "pooled"  # pooled | grid | pooled+grid
    size: int = 224  # input size (models that fix theirs, and hf models, use their own)
    batch_size: int = 64
    workers: int = 2  # DataLoader processes decoding images
    max_pixels: int = 40_000_000  # larger images are unreadable (skip_bad skips them); 0 = PIL's limit


@dataclass(frozen=True)
class TextSettings:
    encoder: str = "tinybert"  # Hugging Face id or local directory, hf:ID_OR_DIR (aliases tinybert, minilm), or "bow"
    weights: str = "auto"  # auto | pretrained | random (random = bag-of-words)
    pooling: str = "auto"  # auto | mean | cls | last (auto: last for decoder-only and CLIP-like towers, else mean)
    tokens: bool = False  # also store per-token states and masks
    ids: bool = False  # also store token ids and lengths (bag-of-words: a word vocabulary of the train split)
    max_length: int = 32
    batch_size: int = 256


@dataclass(frozen=True)
class ExtractRecipe:
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    text: TextSettings = field(default_factory=TextSettings)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (auto: AMP on CUDA, fp32 on the CPU; device.py)
    shard_size: int = 4096  # rows per shard file
    skip_bad: bool = False  # skip unreadable images (recorded in the manifest)


@dataclass(frozen=True)
class HeadSettings:
    name: str = "concat"
    hidden: int = 0  # width; 0 = the head's own default (heads/: each head's `defaults`)
    layers: int = 0  # depth, for heads that have one (coattention, lstm, butd); 0 = the head's default
    dropout: float = 0.3
    standardize: bool = False  # true: image features standardized per dimension (train-split mean, std), not LayerNorm
    embed: int = 0  # learned question embeddings (lstm, butd): width; 0 = the head's default
    init_embeddings: bool = False  # ... started from the text model's input embedding matrix (its width)


@dataclass(frozen=True)
class OptimSettings:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    name: str = "adamw"  # adamw | adam | sgd (training/schedule.py)
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    schedule: str = "cosine"  # cosine | onecycle | constant | step
    warmup_epochs: float = 1.0  # linear warm-up (cosine, constant, step), then the schedule
    min_lr: float = 1e-5  # cosine: the lr at the horizon and after it
    horizon_epochs: float = 0.0  # cosine, onecycle: epochs to the schedule's end (T_max); 0 = epochs
    pct_start: float = 0.3  # onecycle: share of the horizon rising to lr (from lr / 25)
    step_epochs: int = 10  # step: lr *= gamma every step_epochs epochs
    gamma: float = 0.1  # step
    grad_clip: float = 1.0
    patience: int = 5  # early stopping on validation accuracy (0 = off)


@dataclass(frozen=True)
class AnswerSettings:
    top_k: int = 1000  # vocabulary = the K most frequent training answers
    min_count: int = 1


@dataclass(frozen=True)
class TrainRecipe:
    features: ExtractRecipe = field(default_factory=ExtractRecipe)
    head: HeadSettings = field(default_factory=HeadSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    answers: AnswerSettings = field(default_factory=AnswerSettings)
    seed: int = 0
    name: str = "run"  # run directory name under out/
    out: str = "runs"
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (device.py)


@dataclass(frozen=True)
class AugmentSettings:
    """Answer-preserving image augmentation for finetune (off by default; finetuning/augment.py). With
    question_rules, flips are skipped for an image when a question on it in the batch mentions left/right,
    crops when one counts or asks where, colour jitter when one asks about colour."""

    enabled: bool = False
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip
    translate: int = 0  # random shift of up to N pixels (edge-replicated)
    brightness: float = 0.0  # colour jitter: brightness factor in [1-x, 1+x]
    contrast: float = 0.0  # colour jitter: contrast factor in [1-x, 1+x]
    saturation: float = 0.0  # colour jitter: saturation factor in [1-x, 1+x]
    hue: float = 0.0  # colour jitter: hue shift in [-x, x] (at most 0.5)
    crop: float = 1.0  # RandomResizedCrop: area share in [crop, 1], aspect 3/4..4/3 (1 = off)
    question_rules: bool = True  # hold transforms back for questions they could falsify (false: off)


@dataclass(frozen=True)
class FinetuneSettings:
    """`vqa-cache finetune`: the encoders live in the graph (see vqa_cache/finetuning/)."""

    train_encoders: str = "none"  # none | top:N | all  (last N trunk stages / text layers)
    train_image: str = ""  # per-encoder override of train_encoders ("" = same)
    train_text: str = ""
    lora_r: int = 0  # > 0: LoRA adapters (peft) in the trained part instead of full weights
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_text_targets: tuple = ("query", "value")
    lora_image: bool = True  # LoRA on the image trunk's Conv2d layers too
    encoder_lr: float = 1e-4  # head uses optim.lr
    accumulate: int = 1  # optimizer step every N batches
    checkpointing: bool = False  # gradient checkpointing of the trained encoder parts
    group_by_image: bool = False  # batches hold all questions of a few images: each image once per epoch
    init_head: str = ""  # RUN_DIR of a cached `train` run to start the head from
    eval_batch_size: int = 256
    preload_gb: float = 8.0  # decoded images are held in memory up to this size
    workers: int = 2  # processes decoding images (once, at start)
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass(frozen=True)
class FinetuneRecipe(TrainRecipe):
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


@dataclass(frozen=True)
class SweepSettings:
    """The [sweep] table of a sweep recipe: how to search (vqa_cache/search/)."""

    trials: int = 50  # finished (complete or pruned) trials the study should hold
    epochs: int = 0  # epochs per trial (0: the recipe's optim.epochs)
    train_fraction: float = 1.0  # trials train on this share of the training questions (validation: all)
    startup_trials: int = 10  # quasi-random (scrambled Sobol) trials before TPE
    prune_startup_trials: int = 5  # the median pruner waits for this many finished trials ...
    prune_from_epoch: int = 1  # ... and prunes from the end of this epoch on
    jobs: int = 1  # parallel trials (threads) in this process
    parallel: int = 1  # trials trained together, K at a time, in one pass over the cache (jobs unused)
    seed: int = 0  # samplers and the training subset
    out: str = "sweeps"  # sweep directory: out/NAME
