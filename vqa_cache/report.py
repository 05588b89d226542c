"""`vqa-cache report RUN`: one self-contained HTML page about a trained run (RUN/report.html).

It runs the run's best model over its validation split the way `predict` does (predict.prepare and
predict.top_answers: the cached features, the top 5 answers with their softmax scores) and shows:
  - the loss and accuracy curves (metrics.json), accuracy per answer type included;
  - the accuracy per answer type and per question type (bars; the 25 most frequent question types; a chart
    of one bar, a dataset without question types, is left out);
  - the confusion among the 20 most frequent ground-truth answers (rows: the best human answer, columns:
    the prediction; each row sums to 1, predictions outside the 20 in an "other" column);
  - precision, recall and F1 per answer (metrics.per_answer: the best human answer as the label) and macro-F1;
  - a gallery of 50 wrong predictions (VQA accuracy 0) and 20 right ones (accuracy > 0), drawn with a fixed
    seed: the image, the question, the human answers (normalized, with counts), the top 5 with scores, the
    question and image ids; for heads that attend over grid cells, the image with the head's attention map
    over it (explain.py), as the encoder saw it.
Plots are matplotlib PNGs drawn PAGE_PX wide, the page's width at a 1280 px window, so that every label is
at least 10 px there; gallery images JPEG thumbnails, THUMB pixels on their longer side (small images
enlarged); all embedded as data: URIs; every text from the data (questions, answers, names) is HTML-escaped. No script, no external
file: it opens in any browser, offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

import numpy as np

from .answers import best_answer, ground_truth
from .digest import check_out_path
from .encoders.image import MAX_PIXELS, to_8bit_rgb
from .errors import BadInput
from .explain import cached_maps, display_image, overlay_png
from .metrics import per_answer
from .model import prepare
from .plot_text import plain
from .predict import top_answers
from .run_table import encoders
from .rundir import REPORT, cache_keys_of, curves_figure, read_metrics, read_run_config, write_text

THUMB = 192  # gallery thumbnails: this many pixels on the longer side
PAGE_PX = 1216  # plots: the page's content width in a 1280 px window (body margin 2em of 16 px)
WRONG, RIGHT = 50, 20
TOP_ANSWERS, TOP_QTYPES = 20, 25


def write_report(run_dir, root: Path, out=None, seed: int = 0) -> dict:
    """Write the report of a train or finetune run (a finetune run's split encoded live); returns {"out",
    "bytes", "questions", "accuracy", "wrong", "right", "macro_f1", "attention_maps"}."""
    if out:
        check_out_path(out, "report --out", directory=False)
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    metrics = read_metrics(run_dir)  # checked: one reader of metrics.json (rundir)
    history = metrics["epochs"]
    p = prepare(run_dir, root)
    scores, ids = top_answers(p, 5)
    t = p.table.to_pydict()
    accuracy = per_question_accuracy(p.data, ids[:, 0])
    answered = np.array([len(a) > 0 for a in t["answers"]])
    if not answered.any():
        raise BadInput(f"{run_dir}: its validation split {p.split!r} has no answers to compare with")
    answers = p.vocab.answers
    rng = np.random.default_rng(seed)
    wrong = pick(np.nonzero(answered & (accuracy == 0))[0], WRONG, rng)
    right = pick(np.nonzero(answered & (accuracy > 0))[0], RIGHT, rng)

    maps = cached_maps(p, wrong + right)  # {} unless the head attends over grid cells
    spec = display_spec(run_dir, root, config) if maps else {}

    def card(i):
        return gallery_card(
            t["image_path"][i],
            t["question"][i],
            t["answers"][i],
            accuracy[i],
            [(answers[int(j)], float(s)) for j, s in zip(ids[i], scores[i])],
            f"question {t['question_id'][i]}, image {t['image_id'][i]}",
            attention_thumbnail(t["image_path"][i], spec, maps.get(i)),
        )

    kept = np.nonzero(answered)[0]  # the questions with answers to compare with
    scored = per_answer([best_human(t["answers"][i]) for i in kept], [answers[int(ids[i, 0])] for i in kept])
    truth = [best_human(t["answers"][i]) for i in kept]
    distinct = len(set(truth))
    title, bars = bars_png(
        group_accuracy([t["answer_type"][i] for i in kept], accuracy[kept]),
        group_accuracy([t["question_type"][i] for i in kept], accuracy[kept]),
        TOP_QTYPES,
    )
    sections = (
        [("Curves", img(curves_png(history)))]
        + ([(title, img(bars))] if bars else [])
        + [
            (
                f"Confusion among the {TOP_ANSWERS} most frequent of {distinct} answers"
                if distinct > TOP_ANSWERS
                else f"Confusion among the {distinct} answers",
                img(confusion_png(truth, [answers[int(ids[i, 0])] for i in kept])),
            ),
            ("Precision, recall and F1 per answer", per_answer_table(scored)),
            (f"{len(wrong)} wrong predictions", f'<div class="grid">{"".join(card(i) for i in wrong)}</div>'),
            (f"{len(right)} right predictions", f'<div class="grid">{"".join(card(i) for i in right)}</div>'),
        ]
    )
    summary = run_summary(run_dir, config, metrics, p.split, len(kept), float(accuracy[kept].mean()))
    page = PAGE.format(
        title=esc(f"vqa-cache report: {run_dir.name}"),
        summary=summary,
        body="".join(f"<h2>{esc(h)}</h2>\n{content}\n" for h, content in sections),
    )
    out = Path(out) if out else run_dir / REPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    data = page.encode("utf-8")
    write_text(out, page)  # whole or not at all; a symlink there is replaced, not followed
    return {
        "out": str(out),
        "bytes": len(data),
        "questions": len(kept),
        "accuracy": round(float(accuracy[kept].mean()), 6),
        "wrong": len(wrong),
        "right": len(right),
        "macro_f1": scored["macroF1"],
        "attention_maps": len(maps),
    }


def per_question_accuracy(data, predicted: np.ndarray) -> np.ndarray:
    """The VQA accuracy (the soft score training uses) of each question's predicted answer id."""
    idx, val = data.target_idx.cpu().numpy(), data.target_val.cpu().numpy()
    return (val * (idx == predicted[:, None])).sum(1)


def pick(rows: np.ndarray, n: int, rng) -> list[int]:
    """Up to n of `rows`, drawn without replacement, in their order."""
    return sorted(int(i) for i in (rows if len(rows) <= n else rng.choice(rows, size=n, replace=False)))


def best_human(raw: list[str]) -> str:
    return best_answer(ground_truth(raw))


def group_accuracy(groups: list[str], accuracy: np.ndarray) -> list[tuple[str, int, float]]:
    """(group, questions, mean accuracy), most frequent groups first."""
    counts = Counter(groups)
    arr = np.array(groups, dtype=object)
    return [(g, n, float(accuracy[arr == g].mean())) for g, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]


# ---------------------------------------------------------------- plots (matplotlib, no pyplot)


def png(fig) -> bytes:
    """The figure as a PNG PAGE_PX wide (its text: points x PAGE_PX / 72 / width in inches, in pixels)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PAGE_PX / fig.get_figwidth())
    return buf.getvalue()


def curves_png(history: list) -> bytes:
    return png(curves_figure(history, height=3.6))


def bars_png(types: list, qtypes: list, most: int) -> tuple[str, bytes | None]:
    """(section title, PNG) of the accuracy per answer type and per question type; a chart of one bar is left
    out (None: both)."""
    from matplotlib.figure import Figure

    shown = qtypes[:most]
    charts = [
        (groups, title)
        for groups, title in (
            (types, f"answer type ({len(types)})"),
            (
                shown,
                f"question type ({len(shown)} most frequent of {len(qtypes)})"
                if len(qtypes) > most
                else f"question type ({len(qtypes)})",
            ),
        )
        if len(groups) > 1
    ]
    section = "Accuracy per " + " and ".join(title.split(" (")[0] for _, title in charts)
    if not charts:
        return section, None
    fig = Figure(figsize=(10, 1.2 + 0.3 * sum(len(groups) for groups, _ in charts)))
    axes = fig.subplots(len(charts), 1, height_ratios=[len(groups) for groups, _ in charts], squeeze=False)[:, 0]
    for ax, (groups, title) in zip(axes, charts):
        labels = [plain(f"{g} ({n})") for g, n, _ in groups][::-1]
        values = [acc for _, _, acc in groups][::-1]
        ax.barh(range(len(values)), values, color="C0")
        ax.set_yticks(range(len(values)), labels, fontsize=10)
        for y, v in enumerate(values):
            ax.text(min(v + 0.01, 0.92), y, f"{v:.2f}", va="center", fontsize=9)
        ax.set(xlim=(0, 1), title=f"accuracy per {title}")
    fig.tight_layout()
    return section, png(fig)


def confusion_png(truth: list[str], predicted: list[str]) -> bytes:
    from matplotlib.figure import Figure

    top = [a for a, _ in Counter(truth).most_common(TOP_ANSWERS)]
    pos = {a: i for i, a in enumerate(top)}
    m = np.zeros((len(top), len(top) + 1))
    for t, p in zip(truth, predicted):
        if t in pos:
            m[pos[t], pos.get(p, len(top))] += 1
    m /= np.maximum(m.sum(1, keepdims=True), 1)
    side = 2.5 + 0.32 * len(top)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(top) + 1), [plain(a) for a in top] + ["other"], rotation=90, fontsize=8)
    ax.set_yticks(range(len(top)), [plain(a) for a in top], fontsize=8)
    ax.set(xlabel="predicted", ylabel="best human answer")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return png(fig)


# ---------------------------------------------------------------- HTML


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def img(data: bytes, mime: str = "image/png", alt: str = "") -> str:
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode()}" alt="{esc(alt)}">'


def thumbnail(path: str) -> bytes | None:
    """A JPEG thumbnail of an image file (EXIF orientation applied, THUMB pixels on its longer side: small
    images are enlarged), or None when it cannot be read; images over the decoding limit are refused from
    their header, as in extract."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                return None
            im = ImageOps.exif_transpose(im)
            im = to_8bit_rgb(im, im.format)
            scale = THUMB / max(im.size)
            im = im.resize(
                (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), Image.Resampling.LANCZOS
            )
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            return buf.getvalue()
    except Exception:  # missing, unreadable, not an image: the card says so
        return None


def display_spec(run_dir: Path, root: Path, config: dict) -> dict:
    """The resize and crop of the run's image encoder, to draw a map over the image as it saw it: its cache's
    image spec (a train run), else its Model's preprocessing (a finetune run, whose config has no cache)."""
    spec = (config.get("cache_specs") or {}).get("image")
    if spec:
        return spec
    from .model import load

    return load(run_dir, root, device="cpu").preprocess.spec()


def attention_thumbnail(path: str, spec: dict, attention) -> bytes | None:
    """A PNG of the image as the encoder saw it with the head's attention map over it, THUMB pixels a side;
    None without a map or when the image cannot be read."""
    if attention is None:
        return None
    try:
        return overlay_png(display_image(path, spec), attention, size=THUMB / 72)
    except Exception:  # missing, unreadable: the card shows the thumbnail or says so
        return None


def per_answer_table(scored: dict, most: int = TOP_ANSWERS) -> str:
    rows = list(scored["perAnswer"].items())
    cells = "".join(
        f"<tr><td>{esc(a)}</td><td>{r['support']}</td><td>{r['predicted']}</td><td>{r['precision']:.4f}"
        f"</td><td>{r['recall']:.4f}</td><td>{r['f1']:.4f}</td></tr>"
        for a, r in rows[:most]
    )
    return (
        f"<p>macro-F1 {scored['macroF1']:.4f} over {len(rows)} answers (labels: each question's most common "
        f'human answer; the {min(most, len(rows))} most frequent shown)</p><table class="scores"><tr>'
        f"<th>answer</th><th>questions</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th></tr>"
        f"{cells}</table>"
    )


def gallery_card(
    path: str,
    question: str,
    raw: list[str],
    accuracy: float,
    top: list[tuple[str, float]],
    ids: str,
    attention_png: bytes | None = None,
) -> str:
    thumb = thumbnail(path)
    picture = (
        img(thumb, "image/jpeg", Path(path).name)
        if thumb
        else f'<div class="missing">image unavailable:<br>{esc(path)}</div>'
    )
    if attention_png:
        picture += img(attention_png, "image/png", "attention map")
    humans = ", ".join(
        f"{esc(a)}{f' &times;{n}' if n > 1 else ''}" for a, n in Counter(ground_truth(raw)).most_common()
    )
    rows = "".join(f"<tr><td>{s:.1%}</td><td>{esc(a)}</td></tr>" for a, s in top)
    return (
        f'<div class="card {"right" if accuracy > 0 else "wrong"}">{picture}<p class="q">{esc(question)}</p>'
        f"<p>humans: {humans}</p><p>accuracy {accuracy:.2f}</p><table>{rows}</table>"
        f'<p class="ids">{esc(ids)}</p></div>'
    )


def run_summary(run_dir: Path, config: dict, metrics: dict, split: str, questions: int, accuracy: float) -> str:
    recipe = config.get("recipe", {})
    image, text = encoders(config)
    best = metrics.get("best", {})
    items = [
        ("run", run_dir),
        ("dataset", recipe.get("features", {}).get("dataset", {}).get("name", "?")),
        ("head", (config.get("head") or {}).get("name", "?")),
        ("encoders", f"{image} + {text}"),
        ("cache keys", " ".join((cache_keys_of(config) or {}).values())),
        ("answers", (config.get("vocabulary") or {}).get("size", "?")),
        ("best epoch", f"{best.get('epoch')} of {len(metrics.get('epochs', []))}"),
        (
            "validation",
            f"split {split}, {questions} questions, accuracy {accuracy:.4f} (best.pt; the top answer's VQA accuracy)",
        ),
    ]
    return (
        '<table class="summary">'
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
        + "</table>"
    )


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
img {{ max-width: 100%; }}
h2 + img {{ width: 100%; }}
table.summary th {{ text-align: left; padding-right: 1em; }}
table.scores td, table.scores th {{ padding: 0 0.8em 0 0; text-align: right; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(12em, 1fr)); gap: 0.8em; }}
.card {{ border: 1px solid #ccc; border-radius: 4px; padding: 0.5em; font-size: 0.85em; }}
.card.wrong {{ border-left: 4px solid #c33; }}
.card.right {{ border-left: 4px solid #3a3; }}
.card p {{ margin: 0.3em 0; }}
.card .q {{ font-weight: bold; }}
.card td {{ padding: 0 0.4em 0 0; }}
.missing, .ids {{ color: #888; font-size: 0.8em; word-break: break-all; }}
</style>
</head>
<body>
<h1>{title}</h1>
{summary}
{body}
</body>
</html>
"""
