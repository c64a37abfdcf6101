#!/usr/bin/env python3
"""models/export_open_clip.py on randomly initialised open_clip models (no weights needed), with
open_clip's own torch pipeline as the reference:

    check_export.py <out-dir>

For each model: build it with a fixed seed, export it (the first with its weights forced into
external data), and write <out-dir>/reference.json with the vectors open_clip itself makes
(open_clip.image_transform on PIL images turned upright by their EXIF orientation, open_clip.get_tokenizer, encode_image /
encode_text with normalize=True), in the form core/tests/families.rs reads.
"""
import json
import os
import sys

import onnx
import torch
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import export_open_clip  # noqa: E402
import families  # noqa: E402  (the images and texts of the fixtures' reference)
import open_clip  # noqa: E402

# (folder, open_clip model, QuickGELU, external data forced)
MODELS = [("ViT-S-32", "ViT-S-32", False, True), ("ViT-S-32-quickgelu", "ViT-S-32", True, False)]


def upright(rel):
    return ImageOps.exif_transpose(Image.open(os.path.join(ROOT, "tests", "images", rel)))


def main():
    out = os.path.abspath(sys.argv[1])
    reference = {}
    for name, arch, quick, external in MODELS:
        torch.manual_seed(0)
        model, cfg = export_open_clip.create(arch, "none", quick)
        folder = os.path.join(out, name)
        cfg = export_open_clip.export_model(model, cfg, folder, external_over=1 << 20 if external else 1 << 40)
        ops = {n.op_type for n in onnx.load(os.path.join(folder, "visual", "model.onnx"), load_external_data=False).graph.node}
        assert ("Erf" not in ops) == quick, f"{name}: QuickGELU {quick} but the graph has {sorted(ops)}"
        pre = open_clip.get_model_preprocess_cfg(model)
        transform = open_clip.image_transform(pre["size"], is_train=False, mean=pre.get("mean"), std=pre.get("std"),
                                              resize_mode=pre.get("resize_mode"), interpolation=pre.get("interpolation"))
        tokenizer = open_clip.get_tokenizer(arch)
        with torch.no_grad():
            # (pg_clip's open_clip flavour turns photos upright first, as the golden files do)
            images = {rel: model.encode_image(transform(upright(rel))[None], normalize=True)[0].tolist()
                      for rel in families.IMAGES}
            texts = {t: model.encode_text(tokenizer([t]), normalize=True)[0].tolist() for t in families.TEXTS}
        reference[name] = dict(name=name, folder=folder, options={}, family="clip", image_batch=None,
                               text_batch=None, warns=[], external=external, images=images, texts=texts)
        print(f"exported {name}: QuickGELU {cfg['quick_gelu']}, logit_scale {cfg['logit_scale']:.2f}")
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main()
