"""The commands as functions. Each takes the command's options by name (the CLI's flags with underscores,
options.py), prints the same progress as the command (`verbose=False`: quiet, warnings aside) and returns
what it made; bad input raises BadInput (a ValueError) with the CLI's one-line message. The library is
imported inside each function: it pulls in torch, and `import vqa_cache` (so `vqa-cache --help`) should
stay fast."""

from __future__ import annotations

import os
from pathlib import Path

from .. import options as opts
from .. import threads
from ..cache import cache_root
from ..errors import BadInput
from ..tracking import check_names
from .output import count_arg, path_arg, printing, table, text_arg
from .results import CacheKeys, Features, Run, Sweep

OWN = ("recipe", "cache_dir", "verbose")  # the API's own parameters, named when an option is misspelt


def extract(recipe=None, *, cache_dir=None, verbose: bool = True, **options) -> CacheKeys | dict:
    """Stage one: encode every image and question text of a dataset once into the cache (`vqa-cache
    extract`); returns the CacheKeys of the two entries. With dry_run=True nothing is written and the
    estimate is returned: {"device", "entries": [{"kind", "key", "rows", "bytes", "status", "seconds",
    "rows_to_encode"}]}.

    >>> keys = vqa_cache.extract("extract/resnet50-tinybert-concat.toml", image_encoder="resnet18",
    ...                          features="pooled+grid")
    """
    threads.prefer_passive_wait()
    from ..extraction.dry_run import dry_run
    from ..extraction.stage import extract as run

    given = opts.command_options("extract", options, OWN)
    root = cache_root(cache_dir)
    with printing(verbose):
        recipe = opts.extract_recipe(_path(recipe), given)
        threads.set_threads(given.get("threads"), workers=recipe.image.workers)
        if given.get("dry_run"):
            return dry_run(recipe, root)
        plan = run(recipe, root, wait=not given.get("no_wait"))
    return CacheKeys(plan.image_key, plan.question_key, root)


def train(recipe=None, *, cache_dir=None, verbose: bool = True, **options) -> Run:
    """Stage two: train a fusion head on cached features (`vqa-cache train`); returns its Run. Give the
    feature options `extract` was given (a train recipe names its extract recipe instead).

    >>> run = vqa_cache.train("train/resnet50-tinybert-concat.toml", head="attention", epochs=3,
    ...                       features="pooled+grid", set=["optim.lr=3e-4"])
    """
    threads.prefer_passive_wait()
    from ..rundir import pick_run_dir
    from ..training.cached import train as run

    given = opts.command_options("train", options, OWN)
    log = check_names(given.get("log"))
    root = cache_root(cache_dir)
    with printing(verbose):
        recipe, extract_cmd = opts.train_recipe(_path(recipe), given)
        run_dir = pick_run_dir(recipe, given.get("out"), given.get("resume", False))
        run(
            recipe,
            root,
            out=str(run_dir),
            resume=given.get("resume", False),
            extract_cmd=extract_cmd,
            stream=given.get("stream"),
            threads=given.get("threads"),
            extend=given.get("extend"),
            log=log,
        )
    return Run(run_dir)


def finetune(recipe=None, *, verbose: bool = True, **options) -> Run:
    """Train a head end to end through live encoders, without the cache (`vqa-cache finetune`); returns its
    Run.

    >>> run = vqa_cache.finetune("train/easyvqa-finetune.toml", train_encoders="top:1", epochs=4)
    """
    threads.prefer_passive_wait()
    from ..finetuning.recipe import finetune_recipe
    from ..finetuning.run import finetune as run
    from ..rundir import pick_run_dir

    given = opts.command_options("finetune", options, ("recipe", "verbose"))  # (it reads no cache)
    log = check_names(given.get("log"))
    with printing(verbose):
        threads.set_threads(given.get("threads"))  # (its decoding workers run before training, not beside it)
        recipe = finetune_recipe(_path(recipe), given)
        run_dir = pick_run_dir(recipe, given.get("out"), given.get("resume", False))
        run(recipe, out=str(run_dir), resume=given.get("resume", False), extend=given.get("extend"), log=log)
    return Run(run_dir)


def sweep(recipe=None, *, cache_dir=None, verbose: bool = True, **options) -> Sweep:
    """A hyperparameter search (Optuna) over a stage-two recipe on the cache (`vqa-cache sweep`); returns
    its Sweep.

    >>> sweep = vqa_cache.sweep("train/easyvqa-sweep.toml", trials=20, jobs=2)
    """
    threads.prefer_passive_wait()
    from ..search.trials import run_sweep

    given = opts.command_options("sweep", options, OWN)
    log = check_names(given.get("log"))
    root = cache_root(cache_dir)
    with printing(verbose):
        overrides, extract_cmd = opts.sweep_overrides(_path(recipe), given)
        result = run_sweep(
            _path(recipe),
            root,
            trials=given.get("trials"),
            jobs=given.get("jobs"),
            parallel=given.get("parallel"),
            out=given.get("out"),
            resume=given.get("resume", False),
            overrides=given.get("set", ()),
            feature_overrides=overrides,
            extract_cmd=extract_cmd,
            threads=given.get("threads"),
            log=log,
        )
    return Sweep(result["dir"])


def evaluate(questions, annotations, predictions, protocol: str = "current") -> dict:
    """The official VQA accuracy of predictions (`vqa-cache eval`): three paths of JSON files, or the three
    loaded (questions {"questions": [...]}, annotations {"annotations": [...]}, predictions
    [{"question_id", "answer"}]). Returns {"protocol", "overall", "perAnswerType", "perQuestionType",
    "perQuestion"} in percent, and "perAnswer" (precision, recall, F1 of each answer) and "macroF1" as
    fractions. protocol: "current" or "2016" (docs/training.md).

    >>> vqa_cache.evaluate("questions.json", "annotations.json", run.predict(split="test")["out"])["overall"]
    """
    from ..answers import check_protocol
    from ..metrics import evaluate as scores
    from ..metrics import evaluate_files

    check_protocol(protocol)
    given = (questions, annotations, predictions)
    paths = [isinstance(x, (str, os.PathLike)) for x in given]
    if all(paths):
        result = evaluate_files(*given, protocol=protocol)
    elif not any(paths):
        result = scores(*given, protocol=protocol)
    else:
        raise BadInput("evaluate: give questions, annotations and predictions all as paths, or all loaded")
    return {"protocol": protocol, **result}


def ask(run, image, question: str, top: int = 5, cache_dir=None) -> list[tuple[str, float]]:
    """The `top` most probable answers [(answer, probability)] of a run (a Run, a train or finetune run
    directory) or an exported model directory for one image and question (`vqa-cache ask`): both encoded
    live, exactly as the run's cache was (a finetune run: through its trained encoders).

    >>> vqa_cache.ask("runs/easyvqa-concat", "shape.png", "What color is the shape?", top=3)
    [('yellow', 0.3714), ('black', 0.2777), ('red', 0.2099)]
    """
    if not isinstance(image, (str, os.PathLike)) and type(image).__module__.split(".")[0] not in ("PIL", "numpy"):
        raise BadInput(
            f"ask: image = {image!r}: expected a path (str or os.PathLike), a PIL image or a uint8 "
            f"array, got {type(image).__name__}"
        )
    question, top = text_arg("ask", "question", question), count_arg("ask", "top", top)
    return load(Run(run).dir, cache_dir=cache_dir).ask(image, question, top=top)


def load(path, cache_dir=None, device: str = "auto"):
    """The Model of a train run, a finetune run or a model directory `export` wrote (a Run or a path):
    .ask(image, question, top=5) -> [(answer, score)], .predict(images, questions) -> [(answer, score)].
    A train run's encoders are found again on this machine (its cache, `cache_dir`, only for runs older than
    config.json's cache_specs); a model directory needs nothing else. `device`: cpu or cuda (auto: a GPU
    when there is one; for a run, its recipe's device).

    >>> model = vqa_cache.load("models/concat")
    >>> model.ask("shape.png", "What color is the shape?", top=3)
    """
    from ..model import load as load_model

    return load_model(path_arg("load", "path", path), cache_root(cache_dir), text_arg("load", "device", device))


def export(run, out, cache_dir=None) -> Path:
    """Write a run (train or finetune) as a self-contained model directory `out` (`vqa-cache export`):
    config.json, model.safetensors, image_encoder/, text_encoder/, README.md (docs/export.md).
    Returns its path; vqa_cache.load(out) answers with no cache or run directory.

    >>> vqa_cache.export("runs/concat", "models/concat")
    """
    from ..model import export as write
    from ..model import load as load_model

    run, out = path_arg("export", "run", run), path_arg("export", "out", out)
    model = load_model(run, cache_root(cache_dir), "cpu")
    return write(model, out, f"vqa-cache export {run} {out}")


def runs(directory="runs", sort: str = "acc"):
    """One row per run directory at or below `directory` (train, finetune, a sweep's trials), as `vqa-cache
    runs` lists them (docs/report.md): name, mode, head, encoders, cache keys, epochs, best validation
    accuracy (and per answer type), seconds per epoch, parameters, date, finished. A pandas DataFrame, nested
    records flattened (`val_accuracy_per_type.yes/no`, `cache_keys.image`), or the list of records without
    pandas. sort: acc or an answer type (best first), date (newest first), name, mode, head, encoders, cache
    keys, epochs, s/epoch, params.

    >>> vqa_cache.runs("runs")[["name", "head", "val_accuracy"]]
    """
    from ..run_table import table as records

    return table(records(path_arg("runs", "directory", directory), sort))


def load_features(keys, image: str | None = None, question: str = "pooled") -> Features:
    """Features(image ids, image features, question texts, question features) of two cache entries, read whole,
    float32 tensors on the CPU, rows in the order of the ids and texts: images "pooled" [N, D] or "grid"
    [N, h*w, D] (default: the entry's first output); questions "pooled" [M, D] or "tokens" [M, L, D] with the
    padding zeroed. keys: CacheKeys (from extract) or a Run (its cache_keys).

    >>> image_ids, images, texts, questions = vqa_cache.load_features(keys, image="grid")
    """
    import torch

    from ..cache import Entry
    from ..cache.reader import check_complete, read_features

    keys = keys.cache_keys if isinstance(keys, Run) else keys
    if not isinstance(keys, CacheKeys):
        raise BadInput(f"load_features: expected CacheKeys (from extract) or a Run, got {type(keys).__name__}")
    out: list = []
    for kind, key, output in (("image", keys.image, image), ("question", keys.question, question)):
        entry = Entry(keys.root, key)
        manifest = check_complete(entry, "vqa_cache.extract with the options that made these keys")
        spec = manifest.get("spec", {})
        have = (
            spec.get("outputs", ["pooled"])
            if kind == "image"
            else ["pooled"] + (["tokens"] if spec.get("tokens") else [])
        )
        output = output or have[0]
        if output not in have:
            raise BadInput(f"{kind} features {key} hold {' and '.join(have)}, not {output!r}")
        ids, arr = read_features(entry, manifest, output)
        out += [ids, torch.from_numpy(arr)]
    return Features(*out)


def _path(recipe):
    """A recipe given as a path-like -> its str (recipes are named by str everywhere below); another type
    is BadInput."""
    return path_arg("recipe", "recipe", recipe, optional=True)
