"""Stage-two benchmark on one easy-VQA cache: two ratios, measured in one run.

(a) head training throughput / pure compute bound: the real training loop (index gathers from the
    feature tensors or shard streaming, loss, clipping, AdamW, scheduler) against the same model and
    batch size stepping on one batch of tensors already on the device (no indexing, no loading).
    Goal >= 0.9.
(b) end-to-end epoch / cached epoch: one epoch with the same frozen encoders computing the features
    live (images decoded and resized by DataLoader workers, encoder forward, text encoder, head step)
    against one epoch on cached features. The end-to-end epoch is timed over --e2e-batches batches and
    scaled to the epoch's batch count (printed). Goal >= 100x.

    python bench/train.py --device cuda                      # ResNet50 64 px + TinyBERT if available
    python bench/train.py --image-encoder resnet18 --image-size 32 --weights random --text-encoder bow
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--head", default="concat")
    ap.add_argument("--image-encoder", default="resnet50")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--text-encoder", default="tinybert")
    ap.add_argument("--features", default="pooled", choices=["pooled", "grid", "pooled+grid"])
    ap.add_argument("--limit", type=int, default=0, help="questions per split (0 = all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2, help="timed cached epochs (after one warm-up epoch)")
    ap.add_argument("--e2e-batches", type=int, default=30, help="end-to-end batches timed (after 3 warm-up)")
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()

    from vqa_cache import heads, recipes
    from vqa_cache.cache import cache_root
    from vqa_cache.cache.shards import head_ids
    from vqa_cache.device import amp, autocast, pick_device
    from vqa_cache.encoders.image import ImageEncoder, ImageFiles
    from vqa_cache.encoders.text import load_text_encoder
    from vqa_cache.extraction import extract
    from vqa_cache.training.batches import epoch_batches
    from vqa_cache.training.cached import build_head
    from vqa_cache.training.features import load_features
    from vqa_cache.training.splits import build_splits, trainable
    from vqa_cache.training.steps import batch_loss, lr_lambda

    root = cache_root(a.cache_dir)
    feats = {
        "dataset": {"limit": a.limit},
        "device": a.device,
        "image": {
            "encoder": a.image_encoder,
            "size": a.image_size,
            "weights": a.weights,
            "features": a.features,
            "workers": a.workers,
        },
        "text": {
            "encoder": a.text_encoder,
            "weights": a.weights if a.weights in ("auto", "pretrained", "random") else "auto",
            "tokens": heads.needs(a.head)["question"] == "tokens",
            "ids": heads.needs(a.head)["question"] == "ids",
        },
    }
    rec = recipes.build(
        recipes.TrainRecipe,
        {
            "features": feats,
            "head": {"name": a.head},
            "device": a.device,
            "optim": {"batch_size": a.batch_size, "epochs": 10},
        },
    )
    plan = extract(rec.features, root)
    device = pick_device(a.device)
    features = load_features(rec, root, "bench")
    plan, tensors, _ = features
    splits, vocab, _, _ = build_splits(plan, tensors, rec)
    image, question = tensors["image"][1].to(device), tensors["question"][1].to(device)
    tr = splits["train"].to(device)
    K = len(vocab)
    rows = trainable(tr, K)
    o = rec.optim
    steps = math.ceil(len(rows) / o.batch_size)

    def fresh():  # the head as `train` builds it: its defaults, image statistics, seed
        model = build_head(rec, features, K, splits["train"])[0].to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o, steps))
        return model, opt, sched

    ctx, scaler = amp(device)

    def step(model, opt, sched, img, q, idx):
        with ctx:
            logits = model(img, q)
        loss = batch_loss(logits, tr, idx, K)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        (scaler.step(opt), scaler.update()) if scaler else opt.step()
        sched.step()
        return loss.detach()

    # ---- (a) the training loop, one warm-up epoch then a.epochs timed
    model, opt, sched = fresh()
    model.train()
    times = []
    for epoch in range(a.epochs + 1):
        sync(device)
        t0 = time.perf_counter()
        total = 0
        for idx, img, q in epoch_batches(tr, image, question, rows, o.batch_size, 0, epoch):
            total = total + step(model, opt, sched, img, q, idx)
        float(total)
        sync(device)
        times.append(time.perf_counter() - t0)
    loop_epoch = min(times[1:])
    # ---- the pure compute bound: the same model, batch size and step count on one resident batch
    model, opt, sched = fresh()
    model.train()
    idx = rows[: o.batch_size]
    img_b, q_b = image[tr.img_row[idx]].contiguous(), question[tr.q_row[idx]].contiguous()
    n_full = len(rows) / o.batch_size  # the same number of samples as an epoch
    btimes = []
    for _ in range(a.epochs + 1):
        sync(device)
        t0 = time.perf_counter()
        total = 0
        for _ in range(steps):
            total = total + step(model, opt, sched, img_b, q_b, idx)
        float(total)
        sync(device)
        btimes.append(time.perf_counter() - t0)
    bound_epoch = min(btimes[1:]) * n_full / steps
    ratio_a = bound_epoch / loop_epoch

    # ---- (b) end to end: the same frozen encoders live, one epoch's batches (timed over a few, scaled)
    what = heads.needs(a.head)
    enc_i = ImageEncoder(plan.image_choice, (what["image"],)).to(device)
    if device.type == "cuda":
        enc_i = enc_i.to(memory_format=torch.channels_last)
    enc_t = load_text_encoder(
        plan.text_choice,
        plan.question_spec.get("pooling"),
        rec.features.text.max_length,
        rec.features.text.tokens,
        str(device),
        rec.features.text.ids,
        plan.words,
    )
    paths = tr.table.column("image_path").to_pylist()
    texts = tr.table.column("question").to_pylist()
    perm = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).to(device)].cpu()
    batch_list = [perm[s : s + o.batch_size] for s in range(0, len(perm), o.batch_size)]
    n = min(len(batch_list), a.e2e_batches + 3)

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, b):
            idx = batch_list[b]
            files = ImageFiles([paths[i] for i in idx.tolist()], plan.image_choice.preprocess)
            return idx, torch.stack([files[j][1] for j in range(len(idx))])

    loader = torch.utils.data.DataLoader(
        Items(), batch_size=None, num_workers=a.workers, pin_memory=device.type == "cuda"
    )
    model, opt, sched = fresh()
    model.train()
    t0 = None
    for b, (idx, pixels) in enumerate(loader):
        if b == 3:
            sync(device)
            t0 = time.perf_counter()
        with torch.inference_mode(), autocast(device):
            x = pixels.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            img = enc_i(x)[what["image"]]
        t = enc_t.encode([texts[i] for i in idx.tolist()])
        q = torch.from_numpy(
            head_ids(t["ids"], t["length"])
            if what["question"] == "ids"
            else t["tokens"] * t["mask"][:, :, None]
            if what["question"] == "tokens"
            else t["pooled"]
        )
        img, q = img.float().clone(), q.to(device) if what["question"] == "ids" else q.to(device).float()
        step(model, opt, sched, img, q, idx.to(device))
    sync(device)
    timed = n - 3
    e2e_epoch = (time.perf_counter() - t0) / timed * len(batch_list)
    ratio_b = e2e_epoch / loop_epoch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"\nbench/train.py on {name}: head {a.head}, {rec.features.image.encoder} {rec.features.image.size} px "
        f"({plan.image_choice.identity}), text {plan.text_choice.identity}, {len(rows)} train questions, "
        f"batch {o.batch_size}, AMP {'on' if device.type == 'cuda' else 'off'}"
    )
    print(
        f"  cached epoch (training loop)        {loop_epoch * 1000:9.1f} ms  ({len(rows) / loop_epoch:,.0f} questions/s)"
    )
    print(
        f"  pure compute bound (same steps)     {bound_epoch * 1000:9.1f} ms  ({len(rows) / bound_epoch:,.0f} questions/s)"
    )
    print(
        f"  end-to-end epoch, live encoders     {e2e_epoch * 1000:9.1f} ms  (timed {timed} of {len(batch_list)} "
        f"batches, scaled)"
    )
    print(f"(a) throughput / compute bound = {ratio_a:.3f}   (goal >= 0.9)")
    print(f"(b) end-to-end epoch / cached epoch = {ratio_b:.1f}x   (goal >= 100x)")


if __name__ == "__main__":
    main()
