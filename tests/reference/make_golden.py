#!/usr/bin/env python3
"""Produce the golden files that pg_clip's tests compare against, with the reference tools.

    make_golden.py --clip-src DIR   (DIR holds OpenAI CLIP's simple_tokenizer.py and its BPE file)

Writes into tests/golden/:
  preprocess/<image>.png  the 224x224 RGB crop made by open_clip's transform
                          (Resize(224, BICUBIC) -> CenterCrop(224) -> convert("RGB")) run by
                          PIL after ImageOps.exif_transpose. It is uint8 before ToTensor, so a
                          lossless PNG holds the reference exactly; the tests apply
                          ToTensor + Normalize (x/255 - mean)/std themselves.
  tokens.json             [{"text", "ids"}] ids from OpenAI's SimpleTokenizer with sot/eot and
                          open_clip's truncation to 77 (last id forced to eot), unpadded.
  embeddings.json         the tiny model's image embeddings from the Python onnxruntime package on
                          the reference tensors, and text embeddings on the reference ids.
"""
import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import prompts  # noqa: E402

MODEL = os.path.join(ROOT, "models", "tiny-clip")
GOLDEN = os.path.join(ROOT, "tests", "golden")
IMAGES = ["photos/astronaut.png", "photos/chelsea.png", "photos/coffee.png", "photos/rocket.jpg",
          "photos/hubble_deep_field.jpg", "photos/camera.png", "edge/exif_rotate90.jpg", "edge/cat.webp",
          "edge/cat.gif", "edge/palette.png", "edge/alpha.png", "edge/grey.jpg", "edge/cat.bmp",
          "edge/cat.tiff", "edge/panorama.jpg", "edge/one_pixel.png", "edge/rgb16.png"]
TEXTS = ["a photo of a cat", "a photo of an astronaut", "a cup of coffee", "a rocket launch",
         "caf\u00e9 cr\u00e8me", "a photo of " + "very " * 80 + "long text"]
CONTEXT = 77


def open_clip_crop(path, size):
    """open_clip's image_transform (eval) up to ToTensor, as torchvision runs it on a PIL image."""
    img = ImageOps.exif_transpose(Image.open(path))
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # torchvision's _compute_resized_output_size
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = int(round((new_h - size) / 2.0))  # torchvision center_crop
    left = int(round((new_w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    return img.convert("RGB")


def to_tensor(crop, mean, std):
    a = np.asarray(crop, dtype=np.float32) / 255.0
    a = (a - np.array(mean, np.float32)) / np.array(std, np.float32)
    return a.transpose(2, 0, 1)


def load_tokenizer(clip_src):
    spec = importlib.util.spec_from_file_location("simple_tokenizer", os.path.join(clip_src, "simple_tokenizer.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SimpleTokenizer(os.path.join(clip_src, "bpe_simple_vocab_16e6.txt.gz"))


def tokenize(tok, text):
    ids = [tok.encoder["<|startoftext|>"]] + tok.encode(text) + [tok.encoder["<|endoftext|>"]]
    if len(ids) > CONTEXT:
        ids = ids[:CONTEXT]
        ids[-1] = tok.encoder["<|endoftext|>"]
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip-src", required=True)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(MODEL, "visual", "preprocess_cfg.json")))
    size = cfg["size"][0] if isinstance(cfg["size"], list) else cfg["size"]
    os.makedirs(os.path.join(GOLDEN, "preprocess"), exist_ok=True)
    tensors = {}
    for rel in IMAGES:
        crop = open_clip_crop(os.path.join(ROOT, "tests", "images", rel), size)
        crop.save(os.path.join(GOLDEN, "preprocess", os.path.basename(rel) + ".png"))
        tensors[rel] = to_tensor(crop, cfg["mean"], cfg["std"])

    tok = load_tokenizer(a.clip_src)
    with open(os.path.join(GOLDEN, "tokens.json"), "w") as f:
        json.dump([{"text": t, "ids": tokenize(tok, t)} for t in prompts.prompts()], f, ensure_ascii=False, indent=0)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    vis = ort.InferenceSession(os.path.join(MODEL, "visual", "model.onnx"), opts)
    txt = ort.InferenceSession(os.path.join(MODEL, "textual", "model.onnx"), opts)
    images = {}
    for rel, t in tensors.items():
        e = vis.run(None, {"image": t[None]})[0][0]
        images[rel] = (e / np.linalg.norm(e)).tolist()
    texts = {}
    for t in TEXTS:
        ids = np.zeros((1, CONTEXT), np.int32)
        r = tokenize(tok, t)
        ids[0, : len(r)] = r
        e = txt.run(None, {"text": ids})[0][0]
        texts[t] = (e / np.linalg.norm(e)).tolist()
    with open(os.path.join(GOLDEN, "embeddings.json"), "w") as f:
        json.dump({"onnxruntime": ort.__version__, "images": images, "texts": texts}, f, ensure_ascii=False)
    print(f"golden files written to {GOLDEN}")


if __name__ == "__main__":
    main()
