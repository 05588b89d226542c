"""The report reads at 1280 px: plots drawn the page's width with every label >= 10 px there, titles that count
what is there (13 answers, not "20 most frequent"), no one-bar charts, thumbnails >= 128 px."""

from __future__ import annotations

import base64
import io
import re

import pytest
from conftest import FAST, run_cli


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A 1-epoch easy-VQA run's report, and the matplotlib figures drawn for it."""
    from vqa_cache import report as module

    work = tmp_path_factory.mktemp("readable")
    run_cli("--cache-dir", work / "cache", "extract", "--limit", 300, *FAST, "--workers", 0)
    run_cli("--cache-dir", work / "cache", "train", "--limit", 300, *FAST, "--epochs", 1, "--out", work / "run")
    figures, png = [], module.png
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "png", lambda fig: figures.append(fig) or png(fig))
        module.write_report(work / "run", work / "cache")
    return (work / "run" / "report.html").read_text(encoding="utf-8"), figures


def images(html: str, kind: str):
    from PIL import Image

    for data in re.findall(rf'src="data:image/{kind};base64,([^"]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            yield im.size


def test_plots_are_the_page_width_with_labels_of_10_px(report):
    from matplotlib.text import Text

    from vqa_cache.report import PAGE_PX

    html, figures = report
    assert [w for w, _ in images(html, "png")] == [PAGE_PX] * len(figures) and len(figures) >= 2
    assert "h2 + img { width: 100%; }" in html
    for fig in figures:
        fig.canvas.draw()
        scale = PAGE_PX / fig.get_figwidth() / 72  # pixels per point, as png() draws them
        sizes = [t.get_fontsize() * scale for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert sizes and min(sizes) >= 10, (fig, min(sizes))


def test_titles_count_what_is_there(report):
    html, _ = report
    [title] = re.findall(r"<h2>(Confusion[^<]*)</h2>", html)
    assert re.fullmatch(r"Confusion among the \d+ answers", title) and int(title.split()[3]) <= 13, title
    assert "most frequent" not in title
    assert "<h2>Accuracy per answer type and question type</h2>" in html  # easy-VQA has both


def test_one_bar_charts_are_left_out():
    from vqa_cache.report import bars_png

    two, one = [("yes/no", 5, 0.8), ("other", 3, 0.5)], [("", 8, 0.7)]
    assert bars_png(one, one, 25) == ("Accuracy per ", None)
    title, png = bars_png(two, one, 25)  # a dataset without question types
    assert title == "Accuracy per answer type" and png.startswith(b"\x89PNG")
    assert bars_png(one, two, 25)[0] == "Accuracy per question type"


def test_thumbnails_are_at_least_128_px(report):
    from vqa_cache.report import THUMB

    sizes = list(images(report[0], "jpeg"))
    assert sizes and all(max(s) == THUMB and min(s) >= 128 for s in sizes), sizes[:5]
