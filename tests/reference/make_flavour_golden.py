#!/usr/bin/env python3
"""Golden crops of pg_clip's two other preprocessing flavours, made by the software they copy:

    make_flavour_golden.py      (in make test-export's venv: transformers, PIL)

tests/golden/preprocess-transformers/<image>.png: transformers' CLIPImageProcessor (resize the
    shortest edge to 224 with PIL bicubic, centre crop 224, RGB first) on Image.open(path), with
    rescaling and normalisation off, so the uint8 crop is kept exactly;
tests/golden/preprocess-immich/<image>.png: immich's loader (immich_ml/models/transforms.py:
    decode_pil, resize_pil, crop_pil), as tests/reference/families.py follows them.
The images are those of tests/golden/embeddings.json.
"""
import json
import os
import sys

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from families import immich_crop  # noqa: E402  (immich's loader, as the fixtures' reference uses it)
GOLDEN = os.path.join(ROOT, "tests", "golden")
SIZE = 224


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
        immich_crop(path, SIZE).save(os.path.join(GOLDEN, "preprocess-immich", name))
    print(f"wrote {len(images)} crops per flavour into {GOLDEN}/preprocess-{{transformers,immich}}")


if __name__ == "__main__":
    main()
