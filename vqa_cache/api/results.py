"""What the API returns: small frozen dataclasses naming what was made. They read their files when asked
(a Run of a run still training shows the epochs finished so far). The library is imported where it is
used: it pulls in torch, and `import vqa_cache` (so `vqa-cache --help`) should stay fast."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..cache import cache_root
from ..errors import BadInput
from .output import count_arg, csv_table, path_arg, printing, table, text_arg

if TYPE_CHECKING:
    import torch


class Features(NamedTuple):
    """Two cache entries read back (load_features): float32 tensors on the CPU, rows in the order of the ids
    and texts."""

    image_ids: list[str]
    images: torch.Tensor
    texts: list[str]
    questions: torch.Tensor


@dataclass(frozen=True)
class CacheKeys:
    """The two cache entries of one dataset and encoder setting: what `extract` wrote and `train` reads.

    image: the key of the image features (ROOT/image/KEY/), question: of the question features
    (ROOT/question/KEY/), root: the cache root.

    >>> keys = vqa_cache.extract(dataset="easyvqa", image_encoder="resnet18", weights="random", limit=100)
    >>> keys
    CacheKeys(image='image-...', question='question-...', root=PosixPath('/home/me/.cache/vqa-cache'))
    >>> image_ids, images, texts, questions = vqa_cache.load_features(keys)
    """

    image: str
    question: str
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))


@dataclass(frozen=True)
class Directory:
    """A directory the API made (a run, a sweep); usable wherever a path is (os.fspath)."""

    dir: Path

    def __post_init__(self):
        object.__setattr__(self, "dir", Path(path_arg(type(self).__name__, "dir", self.dir)))

    def __fspath__(self) -> str:
        return str(self.dir)


@dataclass(frozen=True)
class Run(Directory):
    """A run directory of `train` or `finetune` (config.json, metrics.json, best.pt, last.pt, curves.png,
    predictions.json). A Run is path-like: `Path(run)`, or `init_head=run` for finetune.

    >>> run = vqa_cache.train(head="attention", features="pooled+grid", epochs=3, out="runs/attention")
    >>> run.best                                        # metrics.json "best"
    {'epoch': ..., 'val_accuracy': ...}
    >>> run.metrics[["epoch", "train_loss", "val_accuracy"]]    # one row per epoch (pandas)
    >>> run.predict(split="test")["accuracy"]           # official-format predictions of best.pt
    >>> run.ask("shape.png", "What color is the shape?")   # [(answer, probability), ...]
    >>> run.report()["out"]                             # RUN/report.html
    >>> vqa_cache.Run("runs/attention").best            # any run directory, also one made by the CLI
    """

    @property
    def config(self) -> dict:
        """config.json: the resolved recipe, cache keys and specs, splits, vocabulary, head and device."""
        from ..rundir import read_run_config

        return read_run_config(self.dir)

    @property
    def metrics(self):
        """One row per finished epoch (epoch, train_loss, val_loss, val_accuracy, val_accuracy_per_type.TYPE,
        learning rates, seconds): a pandas DataFrame, or the list of metrics.json rows without pandas."""
        from ..rundir import read_metrics

        return table(read_metrics(self.dir)["epochs"])

    @property
    def best(self) -> dict:
        """The best epoch so far: {"epoch", "val_accuracy"} (metrics.json "best")."""
        from ..rundir import read_metrics

        return read_metrics(self.dir)["best"]

    @property
    def cache_keys(self) -> CacheKeys:
        """The cache entries the run was trained on (finetune: those its encoders correspond to), in the
        cache it read (else the default cache root)."""
        from ..rundir import cache_keys_of

        config = self.config
        keys = cache_keys_of(config)
        if not (isinstance(keys, dict) and all(isinstance(keys.get(k), str) for k in ("image", "question"))):
            raise BadInput(f"{self.dir / 'config.json'}: no cache keys")
        return CacheKeys(keys["image"], keys["question"], config.get("cache_dir") or cache_root())

    def predict(
        self,
        split: str | None = None,
        out=None,
        stream: bool | None = None,
        cache_dir=None,
        verbose: bool = True,
        format: str = "json",
    ) -> dict:
        """Official-format predictions of the best model for one split of the run's cache (default: its
        validation split), written to `out` (default RUN/predictions-SPLIT.json): {"split", "questions",
        "out", "accuracy", "accuracy_per_type"} (accuracy None where the split has no answers). The cache is
        `cache_dir` when it holds the run's entries, else the one the run was trained on; a finetune run has
        no cache: its split is encoded live through its own trained encoders. format="csv": a CSV submission
        instead (`ID,answer` in test.csv / sample_submission.csv order for a csv: dataset's test split,
        docs/datasets.md)."""
        from ..model import predict

        out = path_arg("predict", "out", out, optional=True)
        if split is not None:
            text_arg("predict", "split", split)
        with printing(verbose):
            return predict(self.dir, cache_root(cache_dir), split=split, out=out, stream=stream, fmt=format)

    def report(self, out=None, cache_dir=None, verbose: bool = True) -> dict:
        """One self-contained HTML page about a train or finetune run (`vqa-cache report`, docs/report.md):
        curves, accuracy per type, confusion, per-answer precision/recall/F1, a gallery (with attention maps for
        heads that attend over grid cells), written to `out` (default RUN/report.html). Returns {"out", "bytes",
        "questions", "accuracy", "wrong", "right", "macro_f1", "attention_maps"}."""
        from ..report import write_report

        out = path_arg("report", "out", out, optional=True)
        with printing(verbose):
            return write_report(self.dir, cache_root(cache_dir), out=out)

    def ask(self, image, question: str, top: int = 5, cache_dir=None) -> list[tuple[str, float]]:
        """The `top` most probable answers [(answer, probability)] for one image file and question, encoded
        live exactly as the run's cache was (a finetune run: through its trained encoders). Loads the model
        each call: keep `run.model()` to ask many."""
        image, question = path_arg("ask", "image", image), text_arg("ask", "question", question)
        return self.model(cache_dir).ask(image, question, top=count_arg("ask", "top", top))

    def explain(self, image, question: str, top: int = 5, cache_dir=None, out=None) -> dict:
        """The answers with a map of where the run looked: {"answers": [{"answer", "score"}], "attention":
        rows x columns summing to 1 or None, "method": "attention" | "grad-cam" | None, "grid"} (`ask --json`;
        docs/training.md#explain). `out`: also draw the map over the image into this PNG (`ask --explain`)."""
        image, question = path_arg("ask", "image", image), text_arg("ask", "question", question)
        return self.model(cache_dir).explain(image, question, top=count_arg("ask", "top", top), out=out)

    def model(self, cache_dir=None):
        """The run's Model (vqa_cache.load): .ask, .predict, .explain, its encoders and head, ready to answer."""
        from ..model import load

        return load(self.dir, cache_root(cache_dir))


@dataclass(frozen=True)
class Sweep(Directory):
    """A sweep directory (sweep.json, study.db, trials/, trials.csv, best.toml, plots).

    >>> sweep = vqa_cache.sweep("train/easyvqa-sweep.toml", trials=20)
    >>> sweep.trials.sort_values("best_val_accuracy", ascending=False).head()   # trials.csv (pandas)
    >>> sweep.result["best_params"]
    >>> run = vqa_cache.train(sweep.best_recipe)        # best.toml: the base recipe, best parameters
    """

    @property
    def result(self) -> dict:
        """sweep.json "result": trial counts, seconds, and the best trial, its accuracy and parameters."""
        path = self.dir / "sweep.json"
        try:
            result = json.loads(path.read_text()).get("result")
        except (OSError, ValueError, AttributeError):
            raise BadInput(f"{self.dir}: no readable sweep.json (not a sweep directory)") from None
        if not isinstance(result, dict):
            raise BadInput(f"{path}: no result (no trial completed, or the sweep has not finished)")
        return result

    @property
    def trials(self):
        """trials.csv, one row per trial: a pandas DataFrame, or a list of dicts of strings without pandas."""
        if not (self.dir / "trials.csv").is_file():
            raise BadInput(f"{self.dir}: no trials.csv (not a sweep directory, or no trial finished yet)")
        return csv_table(self.dir / "trials.csv")

    @property
    def best_recipe(self) -> Path | None:
        """best.toml (train it with vqa_cache.train), or None when no trial completed."""
        path = self.dir / "best.toml"
        return path if path.is_file() else None
