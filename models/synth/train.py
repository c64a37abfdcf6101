#!/usr/bin/env python3
"""Train pg_clip's demo model: a small CLIP, contrastively, on the synthetic world (world.py),
on the CPU, and export it into pg_clip's model folder layout.

    train.py --out models/demo-clip [--images 30000] [--steps 1500] [--seed 0]

The model is open_clip's CLIP class at a small size: a ViT visual tower (64 px, an 8 x 8 token
grid from a convolutional stem) and a causal transformer text tower over the real CLIP BPE
tokens (context 32), trained with open_clip's ClipLoss plus an image-to-image loss that ties each
card's camera frames to its clean render, exported by models/export_open_clip.py
(torch.onnx, dynamic batch). From step 1000 on, every evaluation exports the folder, so an
interrupted run leaves a model.
The text tower keeps an embedding row only for the tokens the world's captions use: a
constant table maps every CLIP token id to its row (the others share one row), which keeps the
folder at a few MB instead of 25 MB for all 49,408 rows. Needs torch and open_clip_torch
(make demo-model uses the export venv, tests/export/requirements.txt).

Training images come from seeds 1000 + i; the tests and benchmarks use seeds below 1000, so
they never see a training image.
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import world  # noqa: E402

SIZE = 64
CONTEXT = 32
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
CAPTIONS_PER_IMAGE = 4
TRAIN_SEED_BASE = 1000
# The identification term: every step, one training frame of each catalogue card against the
# clean cards, InfoNCE at this temperature (SimCLR's and SupCon's form, images on both sides).
CARD_TEMPERATURE = 0.07


def to_input(img):
    """open_clip's preprocessing: shortest side to SIZE (bicubic), centre crop; as uint8."""
    w, h = img.size
    s = SIZE / min(w, h)
    img = img.convert("RGB").resize((max(SIZE, round(w * s)), max(SIZE, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - SIZE) // 2, (h - SIZE) // 2
    return np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), np.uint8)


def render(i):
    rng = np.random.default_rng([TRAIN_SEED_BASE + i // 100000, i % 100000])
    img, attrs, first = world.sample(rng)
    caps = [first] + [world.caption(rng, attrs) for _ in range(CAPTIONS_PER_IMAGE - 1)]
    return to_input(img), caps, attrs


def build_model(seed):
    import open_clip
    import torch
    torch.manual_seed(seed)
    cfg = dict(embed_dim=128, quick_gelu=False,
               vision_cfg=dict(image_size=SIZE, patch_size=8, width=128, layers=4, head_width=32, mlp_ratio=4.0),
               text_cfg=dict(context_length=CONTEXT, vocab_size=49408, width=128, heads=4, layers=3))
    torch.backends.mha.set_fastpath_enabled(False)
    model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                           quick_gelu=False)
    # A convolutional stem in place of the 8 px patch projection (Xiao et al. 2021, "Early
    # convolutions help transformers see better"): three stride-2 convolutions reach the same
    # 8 x 8 grid of tokens. A ViT this small, trained from scratch, learns colour from linear
    # patches but not shape (zero-shot shape accuracy stayed at chance after 700 steps).
    width = cfg["vision_cfg"]["width"]
    model.visual.conv1 = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, 2, 1), torch.nn.GELU(),
        torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.GELU(),
        torch.nn.Conv2d(64, width, 3, 2, 1))
    cfg["vision_cfg"]["stem"] = "conv3x3 s2 x3 (32, 64, width)"
    return model, cfg


def remapped_embedding(token_ids, width):
    """The text tower's token embedding with rows for `token_ids` only: a constant table maps
    every CLIP id to its row, the others to one shared row."""
    import torch

    class Remapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            remap = torch.full((49408,), len(token_ids), dtype=torch.int64)  # the shared "unknown" row
            remap[torch.tensor(token_ids)] = torch.arange(len(token_ids))
            self.register_buffer("remap", remap)
            self.rows = torch.nn.Embedding(len(token_ids) + 1, width)
            torch.nn.init.normal_(self.rows.weight, std=0.02)

        def forward(self, text):
            return self.rows(self.remap[text.long()])

    return Remapped()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=30000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()

    import open_clip
    import torch
    import torch.nn.functional as F
    from open_clip.loss import ClipLoss
    torch.set_num_threads(a.threads)
    t0 = time.time()

    with multiprocessing.Pool(a.threads) as pool:
        data = pool.map(render, range(a.images), chunksize=256)
    images = torch.from_numpy(np.stack([d[0] for d in data]))  # N, H, W, 3 uint8
    captions = [d[1] for d in data]
    print(f"rendered {a.images} images in {time.time() - t0:.0f} s", flush=True)

    tok = open_clip.tokenizer.SimpleTokenizer(context_length=CONTEXT)
    flat = [c for caps in captions for c in caps]
    tokens = tok(flat).reshape(a.images, CAPTIONS_PER_IMAGE, CONTEXT)
    words = " ".join(world.lexicon())
    used = sorted(set(tokens.unique().tolist()) | set(tok([words])[0].tolist()) - {0})
    print(f"{len(used)} distinct tokens in the captions and the lexicon", flush=True)

    model, cfg = build_model(a.seed)
    model.token_embedding = remapped_embedding(used, cfg["text_cfg"]["width"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters", flush=True)
    mean = torch.from_numpy(MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(STD).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(a.seed)

    def batch_images(pixels, augment):
        x = pixels.permute(0, 3, 1, 2).float() / 255
        if augment:
            # a shift of up to 4 px (the camera is never centred), and brightness
            pad = F.pad(x, (4, 4, 4, 4), mode="replicate")
            dx, dy = torch.randint(0, 9, (2,), generator=gen).tolist()
            x = pad[:, :, dy:dy + SIZE, dx:dx + SIZE]
            x = (x * (0.85 + 0.3 * torch.rand(len(x), 1, 1, 1, generator=gen))).clamp(0, 1)
        return (x - mean) / std

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = min(200, a.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, a.steps - warmup))))
    loss_fn = ClipLoss()
    held = torch.arange(a.images - 1000, a.images)  # monitored only; the tests use other seeds
    train_n = a.images - 1000
    # Batches of look-alikes: in a random batch nearly every pair already differs in colour,
    # count or background, so the loss barely asks for the shape. Half the batches take images
    # of one colour, style and background, where only shape, count and packaging tell them
    # apart; one in ten takes cards only, where only the composition does.
    attrs = [d[2] for d in data[:train_n]]
    groups = {}
    for i, t in enumerate(attrs):
        groups.setdefault(("card",) if t["card"] else (t["colour"], t["style"], t["background"]), []).append(i)
    scene_ids = [i for i, t in enumerate(attrs) if not t["card"]]
    group_of = {i: k for k, v in groups.items() for i in v}
    # Identification: the text names a card's shapes and colours, not the card, so captions alone
    # do not tell look-alike cards apart; the card term does (see CARD_TEMPERATURE).
    clean_cards = torch.from_numpy(np.stack([to_input(world.card_image(k)) for k in range(world.N_CARDS)]))
    frames_of = [[] for _ in range(world.N_CARDS)]
    for i, t in enumerate(attrs):
        if t["card"] and t["style"] == "photo":
            frames_of[int(t["card"].split("-")[1])].append(i)
    with_frames = torch.tensor([k for k, f in enumerate(frames_of) if f])  # all 48 in a full run
    frames_of = [torch.tensor(f) for f in frames_of if f]
    held_frames = [i for i in held.tolist() if data[i][2]["card"] and data[i][2]["style"] == "photo"]
    held_frame_card = torch.tensor([int(data[i][2]["card"].split("-")[1]) for i in held_frames])
    card_target = torch.arange(len(frames_of))

    def card_loss():
        pick = torch.stack([f[torch.randint(0, len(f), (1,), generator=gen)][0] for f in frames_of])
        q = model.encode_image(batch_images(images[pick], True), normalize=True)
        r = model.encode_image(batch_images(clean_cards[with_frames], True), normalize=True)
        s = q @ r.T / CARD_TEMPERATURE
        return (F.cross_entropy(s, card_target) + F.cross_entropy(s.T, card_target)) / 2

    def batch_indices():
        r = torch.rand(1, generator=gen).item()
        if r < 0.4:
            return torch.randint(0, train_n, (a.batch,), generator=gen)
        if r < 0.5:
            members = torch.tensor(groups[("card",)])
        else:
            anchor = scene_ids[torch.randint(0, len(scene_ids), (1,), generator=gen).item()]
            members = torch.tensor(groups[group_of[anchor]])
        return members[torch.randperm(len(members), generator=gen)[:a.batch]]
    model.train()
    t1 = time.time()
    curve = []
    for step in range(a.steps):
        idx = batch_indices()
        which = torch.randint(0, CAPTIONS_PER_IMAGE, (len(idx),), generator=gen)
        img_f, txt_f, scale = model(batch_images(images[idx], True), tokens[idx, which])
        clip_loss = loss_fn(img_f, txt_f, scale)
        id_loss = card_loss()
        loss = clip_loss + id_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == a.steps - 1:
            el = time.time() - t1
            curve.append((step, clip_loss.item(), id_loss.item()))
            print(f"step {step:5d}  loss {clip_loss.item():.3f} + cards {id_loss.item():.3f}  logit_scale {model.logit_scale.exp().item():.1f}  "
                  f"{el:.0f} s ({(step + 1) * a.batch / max(el, 1e-9):.0f} pairs/s)", flush=True)
        if step % 250 == 249 or step == a.steps - 1:
            model.eval()
            with torch.no_grad():
                fi = model.encode_image(batch_images(images[held], False), normalize=True)
                zero = {}
                for attr, names in (("colour", list(world.COLOURS)), ("shape", world.SHAPES)):
                    prompts = [f"a picture of a {n} shape" if attr == "colour" else f"a picture of a {n}" for n in names]
                    ft = model.encode_text(tok(prompts), normalize=True)
                    pred = (fi @ ft.T).argmax(1)
                    truth = torch.tensor([names.index(data[i][2][attr]) for i in held.tolist()])
                    zero[attr] = float((pred == truth).float().mean())
                fc = model.encode_image(batch_images(clean_cards, False), normalize=True)
                fq = model.encode_image(batch_images(images[held_frames], False), normalize=True)
                zero["frames_top1"] = float(((fq @ fc.T).argmax(1) == held_frame_card).float().mean())
            print(f"  held-out: zero-shot colour {zero['colour']:.3f}  shape {zero['shape']:.3f}  "
                  f"frames top-1 {zero['frames_top1']:.3f} ({len(held_frames)})", flush=True)
            if step >= 999 or step == a.steps - 1:
                export(model, cfg, a, step, curve, zero, n_params, len(used), t0, t1)
            model.train()
    print(f"trained {time.time() - t1:.0f} s", flush=True)


def export(model, cfg, a, step, curve, zero, n_params, n_tokens, t0, t1):
    """Write the model folder (both graphs, configs, tokenizer) and training.json."""
    import open_clip
    import torch
    import export_open_clip
    train_s = time.time() - t1
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    export_open_clip.export_model(model, dict(cfg), a.out)
    for p in params:
        p.requires_grad_(True)
    # the preprocessing it was trained with, spelled out (open_clip's CLIP class knows the size only)
    with open(os.path.join(a.out, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump({"size": [SIZE, SIZE], "mode": "RGB", "mean": MEAN.tolist(), "std": STD.tolist(),
                   "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}, f, indent=2)
    card = dict(trained_on=f"{a.images - 1000} generated images (models/synth, seeds {TRAIN_SEED_BASE}+), "
                f"{CAPTIONS_PER_IMAGE} captions each", steps=step + 1, batch=a.batch, lr=a.lr, seed=a.seed,
                parameters=n_params, tokens=n_tokens, render_s=round(t1 - t0), train_s=round(train_s),
                threads=a.threads, torch=torch.__version__, open_clip=open_clip.__version__,
                final_loss=curve[-1][1], final_card_loss=curve[-1][2], card_temperature=CARD_TEMPERATURE,
                held_out=zero)
    with open(os.path.join(a.out, "training.json"), "w") as f:
        json.dump(card, f, indent=2)
    print(f"exported step {step + 1} to {a.out}; trained {train_s:.0f} s; {json.dumps(zero)}", flush=True)

if __name__ == "__main__":
    main()
