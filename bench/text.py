"""The text stage of extract against a forward-only loop of the same model on the same texts (issue 22).

    stage         = vqa_cache.extraction.questions.extract_questions on the distinct question texts of a
                    generated VQA v2-shaped set (bench/vqa2_shape.py): tokenizing, the model, pooling,
                    float16 Parquet shards, manifest; the encoder built beforehand (not timed)
    forward only  = the same model on the same texts, tokenized beforehand, in the same batches
    ratio         = forward only / stage   (goal >= 0.8)

Both run in this process, one after the other, twice in alternation (the machine is shared: the best
of each is reported with the load average).

    python bench/text.py --images 500                     # MiniLM (the packaged one), CPU
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=500, help="size of the generated dataset")
    p.add_argument("--text-encoder", default="minilm")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()

    import torch
    from vqa2_shape import make_dataset

    from vqa_cache import threads
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.extraction.questions import build_text_encoder, extract_questions
    from vqa_cache.recipes import DatasetSettings, ExtractRecipe, ImageSettings, TextSettings

    threads.set_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="vqa-cache-text-"))
    try:
        make_dataset(work / "data", a.images)
        recipe = ExtractRecipe(
            DatasetSettings(name=f"vqa2:{work / 'data'}"),
            ImageSettings(encoder="resnet18", weights="random", size=32),
            TextSettings(encoder=a.text_encoder, weights="auto", batch_size=a.batch_size),
            device="cpu",
        )
        plan = make_plan(recipe, root=work / "cache")
        device = torch.device("cpu")
        encoder = build_text_encoder(plan, device)
        texts = plan.texts
        print(
            f"{len(texts)} distinct texts ({plan.samples.num_rows} questions), {plan.text_choice.encoder}, "
            f"batch {a.batch_size}, {threads.describe()}, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        batches = [
            encoder.tokenizer(
                texts[s : s + a.batch_size],
                padding=True,
                truncation=True,
                max_length=recipe.text.max_length,
                return_tensors="pt",
            )
            for s in range(0, len(texts), a.batch_size)
        ]
        stage, forward = [], []
        for _ in range(2):
            shutil.rmtree(work / "cache" / "question", ignore_errors=True)
            t = time.perf_counter()
            extract_questions(plan, work / "cache", device, encoder=encoder)
            stage.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                for b in batches:
                    encoder.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            forward.append(time.perf_counter() - t)
        s, f = min(stage), min(forward)
        print(
            f"stage         {s:8.2f} s  {len(texts) / s:8.1f} texts/s   (runs: {', '.join(f'{x:.1f}' for x in stage)})"
        )
        print(
            f"forward only  {f:8.2f} s  {len(texts) / f:8.1f} texts/s   (runs: {', '.join(f'{x:.1f}' for x in forward)})"
        )
        print(
            f"ratio         {f / s:8.2f}    (forward only / stage; goal >= 0.8); load average at the end "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
