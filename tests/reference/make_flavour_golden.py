#!/usr/bin/env python3
"""Golden crops of pg_clip's two other preprocessing flavours, made by the software they copy:

    make_flavour_golden.py      (in make test-export's venv: transformers, PIL)

tests/golden/preprocess-transformers/<image>.png: transformers' CLIPImageProcessor (resize the
    shortest edge to 224 with PIL bicubic, centre crop 224, RGB first) on Image.open(path), with
    rescaling and normalisation off, so the uint8 crop is kept exactly;
tests/golden/preprocess-immich/<image>.png: immich's loader (immich_ml/models/transforms.py:
    decode_pil, resize_pil, crop_pil), the same functions tests/reference/families.py follows.
The images are those of tests/golden/embeddings.json.
"""
import json
import os

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden")
SIZE = 224


def immich_crop(path):
    img = Image.open(path)
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.width < img.height:
        img = img.resize((SIZE, int((img.height / img.width) * SIZE)), resample=Image.Resampling.BICUBIC)
    else:
        img = img.resize((int((img.width / img.height) * SIZE), SIZE), resample=Image.Resampling.BICUBIC)
    left, upper = int((img.size[0] / 2) - (SIZE / 2)), int((img.size[1] / 2) - (SIZE / 2))
    return img.crop((left, upper, left + SIZE, upper + SIZE))


def main():
    images = sorted(json.load(open(os.path.join(GOLDEN, "embeddings.json")))["images"])
    proc = CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
                              resample=Image.Resampling.BICUBIC, do_rescale=False, do_normalize=False,
                              do_convert_rgb=True)
    for flavour in ("transformers", "immich"):
        os.makedirs(os.path.join(GOLDEN, f"preprocess-{flavour}"), exist_ok=True)
    for rel in images:
        path = os.path.join(ROOT, "tests", "images", rel)
        name = os.path.basename(rel) + ".png"
        px = proc(Image.open(path), return_tensors="np")["pixel_values"][0]  # CHW, 0..255
        crop = Image.fromarray(np.rint(px.transpose(1, 2, 0)).astype(np.uint8), "RGB")
        crop.save(os.path.join(GOLDEN, "preprocess-transformers", name))
        immich_crop(path).save(os.path.join(GOLDEN, "preprocess-immich", name))
    print(f"wrote {len(images)} crops per flavour into {GOLDEN}/preprocess-{{transformers,immich}}")


if __name__ == "__main__":
    main()
