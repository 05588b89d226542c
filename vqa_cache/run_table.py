"""`vqa-cache runs [DIR]`: one row per run directory under DIR (default runs/), to compare a sweep of ideas.

A run directory is a folder with a config.json written by `train` or `finetune` (a sweep's trials/NNNN
folders are run directories too); DIR is searched at any depth, without descending into a run. Each row
is read from config.json and metrics.json only, through the run contract's checked readers (rundir:
read_run_config, read_metrics; no checkpoint is loaded and torch is not imported); a run whose files cannot
be read, or hold values of the wrong type, is a row marked unreadable saying why, and the others print:

    name        the directory, relative to DIR
    mode        train | finetune
    head        the head's name
    encoders    image encoder, its weights identity and image size + the text encoder (bow, or a model)
    cache keys  the image and question cache entries (finetune: the entries it would match)
    epochs      epochs run (and the recipe's total); best_epoch
    acc         the best validation accuracy, and the accuracy per answer type at that epoch
    s/epoch     mean seconds per epoch
    params      the head's parameters (+ the encoder parameters a finetune trains): config.json's
                head_parameters; for runs older than it, counted on torch's meta device from the head settings
    date        when metrics.json was last written (the last epoch), local time
    finished    predictions.json is there (a run that ended; a pruned trial or a killed run has none)
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path

from .errors import BadInput
from .rundir import METRICS, PREDICTIONS, cache_keys_of, has_metrics, is_run, read_metrics, read_run_config

FLIP = ("acc", "date")  # sorted best first / newest first; the other columns ascending
COLUMNS = ("name", "mode", "head", "encoders", "cache keys", "epochs", "acc", "s/epoch", "params", "date")


def find_runs(base: Path) -> list[Path]:
    """Run directories (with a config.json) at or below `base`, sorted; a run's own subfolders are not searched."""
    base = Path(base)
    if not base.is_dir():
        raise BadInput(f"runs: {base}: no such directory")
    if is_run(base):
        return [base]
    found = []
    for folder, subdirs, _ in os.walk(base, followlinks=False):
        if Path(folder) != base and is_run(Path(folder)):
            if not exported_model(Path(folder)):
                found.append(Path(folder))
            subdirs[:] = []  # a run's (or a model directory's) folders hold no runs
        subdirs.sort()
    return sorted(found)


def exported_model(folder: Path) -> bool:
    """A model directory `vqa-cache export` wrote (vqa_cache/model/export.py): its config.json says
    library_name vqa-cache. Not a run."""
    try:
        return '"library_name": "vqa-cache"' in (folder / "config.json").read_text()[:200]
    except (OSError, UnicodeDecodeError):
        return False


HEX = 12  # hex digits of a digest the table shows (--wide: all)
WIDTH = 160  # the text table fits this many columns (or the terminal, when wider); --wide: no limit


def short_weights(identity: str, wide: bool = False) -> str:
    """A weights identity, its digests cut to HEX hex digits: sha256:0123..., dir:0123..., hf:repo@rev ->
    repo@0123..., package:NAME@sha256:0123... -> package:0123... (NAME is the encoder's); random:0,
    IMAGENET1K_V2, bow:v1 as they are. wide: the identity whole."""
    identity = str(identity)
    if wide:
        return identity
    if identity.startswith(("sha256:", "dir:")):
        kind, _, digest = identity.partition(":")
        return f"{kind}:{digest[:HEX]}"
    if identity.startswith("hf:") and "@" in identity:
        repo, _, rev = identity[3:].rpartition("@")
        return f"{repo}@{rev[:HEX]}"
    if identity.startswith("package:") and "@sha256:" in identity:
        return f"package:{identity.rpartition('@sha256:')[2][:HEX]}"
    return identity


def encoders(config: dict, wide: bool = False) -> tuple[str, str]:
    """(image, text) encoder descriptions of a run, weights identities cut short unless `wide`."""
    recipe = config.get("recipe", {})
    features = recipe.get("features", {}) if isinstance(recipe.get("features"), dict) else {}
    specs = config.get("cache_specs") or {}
    ispec, qspec = specs.get("image") or {}, specs.get("question") or {}
    image_rc, text_rc = features.get("image", {}), features.get("text", {})
    enc = config.get("encoders") or {}  # finetune runs
    image = ispec.get("encoder") or image_rc.get("encoder", "?")
    weights = ispec.get("weights") or enc.get("image") or image_rc.get("weights", "?")
    size = ispec.get("size") or image_rc.get("size")
    text_id = qspec.get("weights") or enc.get("text") or ""
    if qspec.get("encoder") == "bow" or str(text_id).startswith("bow:"):
        text = "bow"
    else:
        name = qspec.get("encoder") or text_rc.get("encoder", "?")
        text = f"{Path(str(name)).name} {short_weights(text_id, wide)}".strip()
    return f"{image} {short_weights(weights, wide)}{f' {size}px' if size else ''}", text


def parameters(config: dict) -> int | None:
    """The head's parameter count from its settings (built on the meta device: nothing is allocated), plus
    the encoder parameters a finetune run trains. config.json records the head's count (head_parameters);
    only for a run older than that is torch imported, to build the head on the meta device."""
    trained = (config.get("encoders") or {}).get("trainable_encoder_params") or 0
    if not isinstance(trained, int) or isinstance(trained, bool):
        return None
    if "head_parameters" in config:
        return config["head_parameters"] + trained
    return head_parameters(config.get("head") or {}) + trained if config.get("head") else None


def head_parameters(head: dict) -> int | None:
    """The parameters of a head config, built on the meta device (nothing is allocated)."""
    import torch  # (lazy: slow to import, and only runs older than head_parameters need it)

    from . import heads

    try:
        with torch.device("meta"):
            model = heads.from_config(head)
    except (KeyError, TypeError, ValueError, RuntimeError, BadInput):
        return None
    return sum(p.numel() for p in model.parameters())


def run_row(run: Path, base: Path) -> dict:
    """One run's record (see the module docstring); `error` says what could not be read."""
    name = str(run.relative_to(base)) if run != base else run.name
    row = {"name": name, "path": str(run)}
    try:
        config = read_run_config(run)
        metrics = read_metrics(run) if has_metrics(run) else None
        return {**row, **fields(run, config, metrics)}
    except BadInput as e:  # read_run_config: "RUN/config.json: ..."
        return {**row, "error": str(e).removeprefix(f"{run}{os.sep}")}
    except ValueError as e:
        return {**row, "error": str(e)}
    except (AttributeError, TypeError, KeyError, IndexError):  # JSON, but not what train writes
        return {**row, "error": "config.json or metrics.json malformed"}


def fields(run: Path, config: dict, metrics: dict | None) -> dict:
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    image, text = encoders(config, wide=True)  # whole (--json, --csv); the text table cuts them short
    keys = cache_keys_of(config) or {}
    history = (metrics or {}).get("epochs") or []
    best = (metrics or {}).get("best") or {}
    at_best = next((h for h in history if h.get("epoch") == best.get("epoch")), {})
    seconds = [h["seconds"] for h in history if isinstance(h.get("seconds"), (int, float))]
    optim = recipe.get("optim") if isinstance(recipe.get("optim"), dict) else {}
    return {
        "mode": config.get("mode", "train"),
        "head": (config.get("head") or {}).get("name") or (recipe.get("head") or {}).get("name"),
        "image_encoder": image,
        "text_encoder": text,
        "cache_keys": {k: keys.get(k) for k in ("image", "question")},
        "epochs": history[-1]["epoch"] if history else 0,
        "epochs_planned": optim.get("epochs"),
        "best_epoch": best.get("epoch"),
        "val_accuracy": best.get("val_accuracy") if history else None,
        "val_accuracy_per_type": at_best.get("val_accuracy_per_type") or {},
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3) if seconds else None,
        "parameters": parameters(config),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((run / METRICS).stat().st_mtime))
        if metrics is not None
        else None,
        "finished": (run / PREDICTIONS).is_file(),
    }


def table(base, sort: str = "acc") -> list[dict]:
    """The records of every run at or below `base`, sorted by `sort` (a column of `COLUMNS` or an answer
    type: accuracies best first, the date newest first, other columns ascending; empty values last)."""
    base = Path(base)
    rows = [run_row(r, base) for r in find_runs(base)]
    types = answer_types(rows)
    if sort not in COLUMNS + tuple(types):
        raise BadInput(f"--sort {sort!r}: expected one of {', '.join(COLUMNS + tuple(types))}")
    flip = sort in FLIP or sort in types
    have = [r for r in rows if sort_value(r, sort) is not None]
    return sorted(have, key=lambda r: sort_value(r, sort), reverse=flip) + [
        r for r in rows if sort_value(r, sort) is None
    ]


def sort_value(row: dict, column: str):
    if column in ("name", "mode", "head", "date"):
        return row.get(column)
    if column == "encoders":
        return f"{row.get('image_encoder')} + {row.get('text_encoder')}" if "error" not in row else None
    if column == "cache keys":
        return " ".join(str(v) for v in row.get("cache_keys", {}).values()) or None
    return {
        "epochs": row.get("epochs"),
        "acc": row.get("val_accuracy"),
        "s/epoch": row.get("seconds_per_epoch"),
        "params": row.get("parameters"),
    }.get(column, (row.get("val_accuracy_per_type") or {}).get(column))


def answer_types(rows: list[dict]) -> list[str]:
    return sorted({t for r in rows for t in (r.get("val_accuracy_per_type") or {})})


def flat(row: dict, types: list[str], short: bool = True, wide: bool = False) -> dict:
    """A record as the text table's (short: weights identities and cache keys cut, unless `wide`) or the CSV's
    (full) columns."""
    if "error" in row:  # the table says what is wrong; --json and --csv also why
        return {"name": row["name"], "mode": f"unreadable ({row['error'].split(' (')[0] if short else row['error']})"}
    keys = row["cache_keys"]
    cut = (lambda k: str(k).split("-", 1)[-1][:8]) if short and not wide else str

    def ids(text):
        return text if wide or not short else " ".join(short_weights(word) for word in str(text).split(" "))

    def number(v, fmt):
        return "" if v is None else (format(v, fmt) if short else v)

    out = {
        "name": row["name"],
        "mode": row["mode"],
        "head": row["head"] or "",
        "encoders": f"{ids(row['image_encoder'])} + {ids(row['text_encoder'])}",
        "cache keys": " ".join(cut(keys[k]) for k in ("image", "question") if keys.get(k)),
        "epochs": (f"{row['epochs']}/{row['epochs_planned']}" if short and row["epochs_planned"] else row["epochs"]),
        "acc": number(row["val_accuracy"], ".4f"),
    }
    for t in types:
        out[t] = number(row["val_accuracy_per_type"].get(t), ".4f")
    out.update(
        {
            "s/epoch": number(row["seconds_per_epoch"], ".2f"),
            "params": (human_count(row["parameters"]) if short else row["parameters"])
            if row["parameters"] is not None
            else "",
            "date": (row["date"] or "")[:16].replace("T", " ") if short else row["date"] or "",
        }
    )
    if not short:
        out.update(best_epoch=row["best_epoch"], finished=row["finished"], path=row["path"])
    elif not row["finished"]:
        out["name"] += " *"
    return out


def human_count(n: int) -> str:
    return f"{n / 1e6:.2f}M"  # as `train` prints it


def as_text(rows: list[dict], wide: bool = False, columns: int | None = None) -> str:
    """An aligned text table (numbers right-aligned); runs that did not finish are marked *. It fits `columns`
    (default: WIDTH, or the terminal when wider): when the encoders do not fit in line, the column names each
    distinct pair by a number, [1], [2] ..., spelled out under the table; a name still too long is cut in
    the middle ("..."). `wide`: weights identities and cache keys whole, in line, nothing cut."""
    types = answer_types(rows)
    cells = [flat(r, types, wide=wide) for r in rows]
    header = list(COLUMNS[:7]) + types + list(COLUMNS[7:])
    columns = columns or max(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    width = widths(header, cells)
    legend = []
    if not wide and line_width(width) > columns:
        legend = sorted({c["encoders"] for c in cells if "encoders" in c})
        for c in cells:
            if "encoders" in c:
                c["encoders"] = f"[{legend.index(c['encoders']) + 1}]"
        width = widths(header, cells)
        over = line_width(width) - columns
        width["name"] = max(16, width["name"] - max(0, over))
    right = set(header[5:-1])  # numbers; the date (last) reads left to right

    def line(values):
        return "  ".join(
            middle(str(values.get(h, "")), width[h]).rjust(width[h])
            if h in right
            else middle(str(values.get(h, "")), width[h]).ljust(width[h])
            for h in header
        ).rstrip()

    out = [line({h: h for h in header})] + [line(c) for c in cells]
    out += [f"[{i}] {text}" for i, text in enumerate(legend, 1)]
    if any("error" not in r and not r["finished"] for r in rows):
        out.append("* not finished (no predictions.json: still running, killed, or a pruned trial)")
    return "\n".join(out)


def widths(header: list[str], cells: list[dict]) -> dict:
    return {h: max([len(h)] + [len(str(c.get(h, ""))) for c in cells]) for h in header}


def line_width(width: dict) -> int:
    return sum(width.values()) + 2 * (len(width) - 1)


def middle(text: str, width: int) -> str:
    """`text` cut in the middle to `width` characters ("..." where it was cut), or whole when it fits."""
    if len(text) <= width:
        return text
    head = (width - 3 + 1) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head) :]


def as_csv(rows: list[dict]) -> str:
    types = answer_types(rows)
    cells = [flat(r, types, short=False) for r in rows]
    header = list(COLUMNS[:7]) + types + list(COLUMNS[7:]) + ["best_epoch", "finished", "path"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(cells)
    return buf.getvalue()


def as_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1)
