"""Dataset text in plots is shown as written, never parsed as mathtext (issue 23.2): an answer type, answer
or search choice like `$x^$` used to crash train after its last epoch (no curves.png), report and sweep."""

from __future__ import annotations

import json

import optuna
from conftest import FAST
from fixtures_data import make_vqa2
from optuna.distributions import CategoricalDistribution, FloatDistribution

MATH = "$x^$"  # malformed mathtext: matplotlib's parser raises on it when the figure is drawn


def test_train_resume_and_report_draw_mathtext_like_labels(cli, tmp_path):
    files = make_vqa2(tmp_path / "v", images=(("train2014", 6), ("val2014", 4)))
    for split in ("train", "val"):
        path = files[split]["annotations"]
        doc = json.loads(path.read_text())
        for a in doc["annotations"]:
            if a["answer_type"] == "other":
                a["answer_type"] = MATH
                a["question_type"] = "$what^$"
                a["multiple_choice_answer"] = "$a^$"
                a["answers"] = [dict(x, answer="$a^$") for x in a["answers"]]
        path.write_text(json.dumps(doc))
    cache, run = tmp_path / "cache", tmp_path / "run"
    common = ["--cache-dir", cache]
    data = ["--dataset", f"vqa2:{tmp_path / 'v'}", *FAST, "--text-encoder", "bow"]
    r = cli(*common, "extract", *data, "--workers", 0)
    assert r.code == 0, r
    r = cli(*common, "train", *data, "--epochs", 1, "--batch-size", 8, "--out", run)
    assert r.code == 0, r
    assert (run / "curves.png").stat().st_size > 0
    r = cli(*common, "train", *data, "--epochs", 2, "--batch-size", 8, "--out", run, "--resume")
    assert r.code == 0, r
    r = cli(*common, "report", run, "--out", tmp_path / "r.html")
    assert r.code == 0, r
    assert (tmp_path / "r.html").stat().st_size > 0


def test_sweep_plots_take_mathtext_like_choices_and_names(tmp_path):
    from vqa_cache.search.report import plot_importance, plot_params

    dists = {
        "head.$k^$": CategoricalDistribution([MATH, "plain", "_under"]),
        "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
    }
    study = optuna.create_study(direction="maximize")
    for i in range(6):
        study.add_trial(
            optuna.trial.create_trial(
                params={"head.$k^$": [MATH, "plain", "_under"][i % 3], "optim.lr": 1e-4 * (i + 1)},
                distributions=dists,
                value=0.1 * i,
            )
        )
    plot_params(study, dists, tmp_path)
    plot_importance(study, tmp_path)
    assert (tmp_path / "params.png").stat().st_size > 0
    assert (tmp_path / "importance.png").stat().st_size > 0


def test_plain_escapes_every_dollar():
    from matplotlib.figure import Figure

    from vqa_cache.plot_text import plain

    fig = Figure()
    text = fig.text(0, 0, plain("$a$ and $x^$ and \\$"))
    fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
    assert not text._preprocess_math(text.get_text())[1]  # drawn as plain text, not mathtext
    assert text._preprocess_math(text.get_text())[0] == "$a$ and $x^$ and \\$"
