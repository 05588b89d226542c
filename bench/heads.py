"""Every head on one easy-VQA cache, side by side in one run: best validation accuracy and seconds per
epoch, with the image input layer-normalized across dimensions (head.standardize = false, the default)
and standardized per dimension with the training split's mean and std (true). Prints, per head, its
epoch time as a ratio to concat's and the accuracy standardization gains (or loses).

    python bench/heads.py                                   # what `weights = "auto"` gives (offline: Lite0 + MiniLM)
    python bench/heads.py --weights random                  # random-init ResNet50 + bag-of-words word ids
    python bench/heads.py --heads concat,lstm,butd --epochs 20 --norms layernorm

One cache serves every head: pooled + grid image features, question vectors, token states (for
coattention; not with bag-of-words) and token ids (lstm, butd). Seconds per epoch are the median over the
run's epochs and include the validation pass; the cache is extracted first and not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
HEADS = "concat,hadamard,bilinear,attention,coattention,lstm,butd"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="auto", help="auto (pretrained, or the packaged fallbacks) or random")
    ap.add_argument("--heads", default=HEADS)
    ap.add_argument("--norms", default="layernorm,standardize")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0, help="questions per split (0 = all)")
    ap.add_argument("--cache-dir", help="reuse this cache root (default: a temporary one)")
    ap.add_argument("--out", help="run directories here (default: a temporary folder)")
    a = ap.parse_args()

    import vqa_cache
    from vqa_cache.heads import from_config

    recipe = ROOT / "extract" / "resnet50-tinybert-concat.toml"
    cache = a.cache_dir or tempfile.mkdtemp(prefix="vqa-heads-cache-")
    out = Path(a.out or tempfile.mkdtemp(prefix="vqa-heads-runs-"))
    bow = a.weights == "random"  # --weights random: a random image model and bag-of-words text
    text = ["text.ids=true"] + ([] if bow else ["text.tokens=true"])
    feats = dict(features="pooled+grid", weights=a.weights, limit=a.limit)
    vqa_cache.extract(str(recipe), cache_dir=cache, set=text, **feats)

    heads = [h for h in a.heads.split(",") if not (bow and h == "coattention")]
    results = {}
    for head in heads:
        for norm in a.norms.split(","):
            run = vqa_cache.train(
                str(ROOT / "train" / "resnet50-tinybert-concat.toml"),
                cache_dir=cache,
                head=head,
                epochs=a.epochs,
                out=str(out / f"{head}-{norm}"),
                verbose=False,
                set=[f"features.{s}" for s in text] + [f"head.standardize={norm == 'standardize'}".lower()],
                **feats,
            )
            m = json.loads((run.dir / "metrics.json").read_text())
            best = m["epochs"][m["best"]["epoch"] - 1]
            config = run.config
            results[head, norm] = dict(
                acc=best["val_accuracy"],
                epoch=best["epoch"],
                types=best["val_accuracy_per_type"],
                s=statistics.median(e["seconds"] for e in m["epochs"]),
                params=sum(p.numel() for p in from_config(config["head"]).parameters()),
                hidden=config["head"]["hidden"],
                layers=config["head"].get("layers", "-"),
            )
            r = results[head, norm]
            print(
                f"{head:12s} {norm:11s} best val acc {r['acc']:.4f} (epoch {r['epoch']}; yes/no "
                f"{r['types'].get('yes/no', 0):.4f}, other {r['types'].get('other', 0):.4f})  {r['s']:.2f} s/epoch",
                flush=True,
            )

    norms = a.norms.split(",")
    print(f"\n{a.epochs} epochs, weights {a.weights}, runs in {out}")
    print(
        "| head | width, depth | parameters | "
        + " | ".join(f"val acc, {n}" for n in norms)
        + (" | standardize - layernorm" if sorted(norms) == ["layernorm", "standardize"] else "")
        + " | s/epoch | x concat |"
    )
    print("|---" * (5 + len(norms) + (sorted(norms) == ["layernorm", "standardize"])) + "|")
    base = results.get(("concat", norms[0]), {}).get("s")
    for head in heads:
        r = results[head, norms[0]]
        accs = " | ".join(f"{results[head, n]['acc']:.4f}" for n in norms)
        gain = (
            f" | {results[head, 'standardize']['acc'] - results[head, 'layernorm']['acc']:+.4f}"
            if sorted(norms) == ["layernorm", "standardize"]
            else ""
        )
        ratio = f"{r['s'] / base:.2f}" if base else "-"
        print(
            f"| {head} | {r['hidden']}, {r['layers']} | {r['params'] / 1e6:.2f}M | {accs}{gain} | {r['s']:.2f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
