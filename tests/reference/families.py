#!/usr/bin/env python3
"""The reference embeddings of the model fixtures (models/gen_fixtures.py), made the way the
software that reads such folders makes them:

    families.py <fixtures-dir>      writes <fixtures-dir>/reference.json

Text, as immich's loader does it (immich_ml/models/clip/textual.py): the `tokenizers` package's
Tokenizer.from_file, enable_padding(length=context_length, pad_token from tokenizer_config.json),
enable_truncation(context_length), encode(text) with the file's own post-processor; the cleaning
open_clip's HFTokenizer applies for text_cfg.tokenizer_kwargs.clean (open_clip/tokenizer.py:
basic_clean with ftfy and html.unescape, then whitespace / lower / canonicalize); nllb's
FLORES code put before the text; M-CLIP's attention_mask as a second input. CLIP's BPE
tokenizer is framed as open_clip's tokenize() does (sot, ids, eot, truncated with eot last).
Images, by the registration option `preprocess`: "immich" as immich's loader (decode_pil,
resize_pil, crop_pil, to_numpy, normalize in immich_ml/models/transforms.py) or "open_clip" as
open_clip's eval transform runs on PIL (make_golden.open_clip_crop), squash included.
onnxruntime runs the graphs one item at a time (batch 1 fits every fixture).
"""
import html
import json
import os
import string
import sys

import ftfy
import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import make_golden  # noqa: E402  (open_clip's transform on PIL, and ToTensor + Normalize)
IMAGES = ["photos/astronaut.png", "photos/chelsea.png", "photos/coffee.png", "photos/rocket.jpg",
          "photos/hubble_deep_field.jpg", "photos/camera.png", "edge/exif_rotate90.jpg", "edge/palette.png",
          "edge/alpha.png", "edge/grey.jpg", "edge/panorama.jpg", "edge/cat.gif"]
TEXTS = ["a photo of a cat", "A DOG's toy_box!", "  two   spaces  in text ", "caf\u00e9 cr\u00e8me",
         "a photo of " + "very " * 80 + "long text"]


# open_clip/tokenizer.py
def basic_clean(text):
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def clean(text, how):
    text = basic_clean(text)
    if how == "canonicalize":
        text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
        return " ".join(text.split()).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if how == "lower" else text


def clip_ids(tok, text, context):
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    ids = tok.encode(" ".join(basic_clean(text).split()).lower(), add_special_tokens=False).ids
    ids = [sot] + ids[: context - 2] + [eot]
    return ids + [eot] * (context - len(ids)), [1] * context


def hf_ids(folder, spec, text, context):
    tok = Tokenizer.from_file(os.path.join(folder, "textual", "tokenizer.json"))
    pad = json.load(open(os.path.join(folder, "textual", "tokenizer_config.json")))["pad_token"]
    tok.enable_padding(length=context, pad_token=pad, pad_id=tok.token_to_id(pad))
    tok.enable_truncation(max_length=context)
    text = clean(text, spec["clean"])
    if spec.get("language"):
        text = f"{spec['language']}{text}"
    enc = tok.encode(text)
    return enc.ids, enc.attention_mask


# immich_ml/models/transforms.py: decode_pil, resize_pil, crop_pil
def immich_crop(path, size, resample=Image.Resampling.BICUBIC):
    img = Image.open(path)
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.width < img.height:
        img = img.resize((size, int((img.height / img.width) * size)), resample=resample)
    else:
        img = img.resize((int((img.width / img.height) * size), size), resample=resample)
    left, upper = int((img.size[0] / 2) - (size / 2)), int((img.size[1] / 2) - (size / 2))
    return img.crop((left, upper, left + size, upper + size))


# immich_ml/models/transforms.py: to_numpy, normalize
def immich_pixels(path, size, mean, std):
    a = np.asarray(immich_crop(path, size), dtype=np.float32) / 255.0
    a *= 1.0 / np.asarray(std, np.float32)
    a -= np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return a.transpose(2, 0, 1)


# open_clip's eval transform as make_golden.py runs it; squash resizes both sides to `size`
def open_clip_pixels(path, size, mean, std, squash):
    if squash:
        crop = ImageOps.exif_transpose(Image.open(path)).resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
    else:
        crop = make_golden.open_clip_crop(path, size)
    return make_golden.to_tensor(crop, mean, std)


def unit(v):
    return (v / np.linalg.norm(v)).tolist()


def reference(spec):
    folder = spec["folder"]
    cfg = json.load(open(os.path.join(folder, "config.json")))
    pre = json.load(open(os.path.join(folder, "visual", "preprocess_cfg.json")))
    size = pre["size"][0] if isinstance(pre["size"], list) else pre["size"]
    context = cfg.get("text_cfg", {}).get("context_length", 77)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    vis = ort.InferenceSession(os.path.join(folder, "visual", "model.onnx"), opts)
    txt = ort.InferenceSession(os.path.join(folder, "textual", "model.onnx"), opts)
    images = {}
    for rel in IMAGES:
        path = os.path.join(ROOT, "tests", "images", rel)
        if spec["options"].get("preprocess") == "immich":
            t = immich_pixels(path, size, pre["mean"], pre["std"])
        else:
            t = open_clip_pixels(path, size, pre["mean"], pre["std"], pre.get("resize_mode") == "squash")
        images[rel] = unit(vis.run(None, {vis.get_inputs()[0].name: t[None]})[0][0])
    texts, tokens = {}, {}
    names = [i.name for i in txt.get_inputs()]
    dtype = np.int64 if txt.get_inputs()[0].type == "tensor(int64)" else np.int32
    tok = Tokenizer.from_file(os.path.join(folder, "textual", "tokenizer.json"))
    for text in TEXTS:
        if spec["clean"] == "clip":
            ids, mask = clip_ids(tok, text, context)
        else:
            ids, mask = hf_ids(folder, spec, text, context)
        feed = {names[0]: np.array([ids], dtype)}
        if len(names) == 2:
            feed = {"input_ids": np.array([ids], dtype), "attention_mask": np.array([mask], dtype)}
        texts[text] = unit(txt.run(None, feed)[0][0])
        tokens[text] = ids
    return {"images": images, "texts": texts, "tokens": tokens}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    result = {spec["name"]: dict(spec, **reference(spec)) for spec in manifest}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(result, f)
    print(f"reference embeddings of {len(result)} fixtures in {out}/reference.json")


if __name__ == "__main__":
    main()
