#!/usr/bin/env python3
"""The reference pipeline, as a Python application would write it: PIL decode and
open_clip's transform (exif_transpose, Resize shortest side bicubic, CenterCrop, RGB), numpy
ToTensor + Normalize, an onnxruntime session, batches of the same size as pg_clip's.
    reference.py <model-dir> <photo-dir> <threads> <batch>"""
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def preprocess(path, size, mean, std):
    img = ImageOps.exif_transpose(Image.open(path))
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_w, new_h = (size, int(size * long / short)) if w <= h else (int(size * long / short), size)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size)).convert("RGB")
    a = (np.asarray(img, dtype=np.float32) / 255.0 - mean) / std
    return a.transpose(2, 0, 1)


def main(model, photos, threads, batch):
    cfg = json.load(open(os.path.join(model, "visual", "preprocess_cfg.json")))
    size = cfg["size"][0] if isinstance(cfg["size"], list) else cfg["size"]
    mean, std = np.array(cfg["mean"], np.float32), np.array(cfg["std"], np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(os.path.join(model, "visual", "model.onnx"), opts, providers=["CPUExecutionProvider"])
    files = sorted(os.path.join(photos, f) for f in os.listdir(photos))
    sess.run(None, {"image": preprocess(files[0], size, mean, std)[None]})  # warm-up
    t = time.perf_counter()
    for i in range(0, len(files), batch):
        x = np.stack([preprocess(f, size, mean, std) for f in files[i:i + batch]])
        e = sess.run(None, {"image": x})[0]
        e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = time.perf_counter() - t
    print(f"reference batch={batch} images={len(files)} seconds={s:.3f} images_per_s={len(files) / s:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
