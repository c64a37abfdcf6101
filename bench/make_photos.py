#!/usr/bin/env python3
"""Real-size JPEG photos for the benchmark, derived from the committed sample photos:
random crops of each upscaled to 1-4 megapixels, flipped and re-encoded at JPEG quality
85-95. Deterministic for a seed. No photo data set can be downloaded on these machines."""
import os
import random
import sys

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "tests", "images", "photos")


def main(out, n, seed=0):
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    sources = [Image.open(os.path.join(SRC, f)).convert("RGB") for f in sorted(os.listdir(SRC))]
    for i in range(n):
        path = os.path.join(out, f"photo_{i:04d}.jpg")
        if os.path.exists(path):
            continue
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        mp = rng.uniform(1.0, 4.0) * 1e6
        scale = (mp / (cw * ch)) ** 0.5
        crop = img.crop((x, y, x + cw, y + ch)).resize((int(cw * scale), int(ch * scale)), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(path, quality=rng.randint(85, 95))
    print(f"{n} photos in {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
