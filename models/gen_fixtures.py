#!/usr/bin/env python3
"""Small random-weight models in the layouts of real CLIP exports, one per family, for tests:

    gen_fixtures.py <out-dir>

writes <out-dir>/<fixture>/ (each a model folder) and <out-dir>/manifest.json, which lists each
fixture's folder, the registration options it is tested with and what pg_clip must read from it.
The layouts follow immich's exporter (immich-app/ml-models) and open_clip's model configs:

  immich-static   ViT-B-32__openai as immich exports it since 2025: both graphs with a fixed
                  batch of 1, output "embedding", exact GELU (immich's __openai graphs)
  immich-dynamic  the older generation: a symbolic batch, outputs image_embedding/text_embedding
  external        weights as ONNX external data (visual: one file, textual: a file per tensor)
  siglip          SigLIP: a SentencePiece-style Unigram tokenizer.json, context 64,
                  tokenizer_kwargs.clean = canonicalize, logit_scale and logit_bias in
                  config.json, size as a list [256, 256], squash resizing, last-token pooling
  mclip           M-CLIP: an XLM-R-style tokenizer and a text graph with inputs input_ids and
                  attention_mask (mean pooling over the mask)
  nllb            nllb-clip: FLORES-200 language tokens, a CLS pooler, SigLIP's init_logit_bias
                  without the trained values (registered with them as options)

Graphs come from gen_clip.py (same blocks, tiny widths); tokenizers are built with the
`tokenizers` package. Needs onnx, numpy, tokenizers; the CLIP BPE merges for the CLIP
tokenizer are copied from models/tiny-clip.
"""
import json
import os
import shutil
import string
import sys

import numpy as np
from onnx import TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_clip  # noqa: E402

MEAN, STD = gen_clip.MEAN, gen_clip.STD
TINY = dict(image_size=224, patch=32, v_width=32, v_layers=2, v_heads=4, t_width=16, t_layers=2, t_heads=2,
            embed_dim=64)
# words the test prompts use, and every character, so that any text has pieces
WORDS = ["a", "photo", "of", "the", "cat", "dog", "toy", "box", "an", "astronaut", "cup", "coffee", "rocket",
         "launch", "two", "spaces", "very", "long", "text", "in", "café", "crème", "picture", "with"]
CHARS = string.ascii_letters + string.digits + string.punctuation + "éèàç"


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def preprocess_cfg(size, resize_mode="shortest", mean=MEAN, std=STD, as_list=True):
    return {"size": [size, size] if as_list else size, "mode": "RGB", "mean": mean, "std": std,
            "interpolation": "bicubic", "resize_mode": resize_mode, "fill_color": 0}


def clip_tokenizer(out):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(HERE, "tiny-clip", "textual", f), os.path.join(out, "textual", f))


def unigram_tokenizer(out, specials, template, pad, added=()):
    """A SentencePiece-style Unigram tokenizer (Metaspace pre-tokenizer, NFKC), as T5, Gemma,
    XLM-R and NLLB tokenizers are saved by transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    vocab = [(t, 0.0) for t in specials] + [("\u2581" + w, -5.0) for w in WORDS] + [("\u2581", -8.0)]
    vocab += [(c, -10.0) for c in CHARS] + [("\u2581" + c, -9.0) for c in CHARS if c not in WORDS]
    unk = specials.index("<unk>")
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    ids = {t: i for i, (t, _) in enumerate(vocab)}
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, ids[t]) for t in specials if t in template.split()])
    tok.add_special_tokens(list(specials) + list(added))
    tok.save(os.path.join(out, "textual", "tokenizer.json"))
    write_json(os.path.join(out, "textual", "tokenizer_config.json"),
               {"pad_token": pad, "eos_token": "</s>", "unk_token": "<unk>"})
    return tok.get_vocab_size()


def clip_config(embed_dim, context=77, **extra):
    cfg = {"embed_dim": embed_dim,
           "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32},
           "text_cfg": {"context_length": context, "vocab_size": gen_clip.VOCAB, "width": 16, "heads": 2, "layers": 2}}
    cfg.update(extra)
    return cfg


def build(out, name, seed):
    rng = np.random.default_rng(seed)
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "textual"), exist_ok=True)
    dim = TINY["embed_dim"]
    if name == "immich-static":
        d = os.path.join(out, name, "ViT-B-32__openai")
        os.makedirs(os.path.join(d, "textual"), exist_ok=True)
        gen_clip.save(gen_clip.visual(TINY, rng, batch=1, gelu="exact"), os.path.join(d, "visual", "model.onnx"))
        gen_clip.save(gen_clip.textual(TINY, rng, batch=1, gelu="exact"), os.path.join(d, "textual", "model.onnx"))
        clip_tokenizer(d)
        write_json(os.path.join(d, "config.json"), clip_config(dim))
        write_json(os.path.join(d, "visual", "preprocess_cfg.json"), preprocess_cfg(224))
        return d, dict(options={"preprocess": "immich"}, family="clip", image_batch=1, text_batch=1,
                       clean="clip", warns=["exact GELU"])
    if name == "immich-dynamic":
        gen_clip.save(gen_clip.visual(TINY, rng, out="image_embedding"), os.path.join(d, "visual", "model.onnx"))
        gen_clip.save(gen_clip.textual(TINY, rng, out="text_embedding"), os.path.join(d, "textual", "model.onnx"))
        clip_tokenizer(d)
        write_json(os.path.join(d, "config.json"), clip_config(dim))
        write_json(os.path.join(d, "visual", "preprocess_cfg.json"), preprocess_cfg(224, as_list=False))
        return d, dict(options={"preprocess": "immich"}, family="clip", image_batch=None, text_batch=None,
                       clean="clip", warns=[])
    if name == "external":
        gen_clip.save(gen_clip.visual(TINY, rng), os.path.join(d, "visual", "model.onnx"), external="one")
        gen_clip.save(gen_clip.textual(TINY, rng), os.path.join(d, "textual", "model.onnx"), external="each")
        clip_tokenizer(d)
        write_json(os.path.join(d, "config.json"), clip_config(dim))
        write_json(os.path.join(d, "visual", "preprocess_cfg.json"), preprocess_cfg(224))
        return d, dict(options={}, family="clip", image_batch=None, text_batch=None, clean="clip", warns=[])
    if name == "siglip":
        vocab = unigram_tokenizer(d, ["<pad>", "</s>", "<unk>"], "$A </s>", "</s>")
        size = 256
        gen_clip.save(gen_clip.visual(dict(TINY, image_size=size), rng), os.path.join(d, "visual", "model.onnx"))
        gen_clip.save(gen_clip.textual(TINY, rng, context=64, vocab=vocab, pool="last", gelu="exact"),
                      os.path.join(d, "textual", "model.onnx"))
        write_json(os.path.join(d, "config.json"), {
            "embed_dim": dim, "init_logit_bias": -10, "custom_text": True, "logit_scale": 112.5, "logit_bias": -16.25,
            "vision_cfg": {"image_size": size, "timm_model_name": "vit_base_patch16_siglip_256"},
            "text_cfg": {"context_length": 64, "vocab_size": vocab, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                         "tokenizer_kwargs": {"clean": "canonicalize"}}})
        write_json(os.path.join(d, "visual", "preprocess_cfg.json"),
                   preprocess_cfg(size, "squash", [0.5] * 3, [0.5] * 3))
        return d, dict(options={}, family="siglip", image_batch=None, text_batch=None, clean="canonicalize",
                       logit_scale=112.5, logit_bias=-16.25, warns=[])
    if name == "mclip":
        vocab = unigram_tokenizer(d, ["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>", "<pad>")
        gen_clip.save(gen_clip.visual(TINY, rng, out="image_embedding"), os.path.join(d, "visual", "model.onnx"))
        gen_clip.save(gen_clip.textual(TINY, rng, vocab=vocab, pool="mean", with_mask=True, out="text_embedding"),
                      os.path.join(d, "textual", "model.onnx"))
        write_json(os.path.join(d, "config.json"), {"embed_dim": dim, "text_cfg": {"context_length": 77}})
        write_json(os.path.join(d, "visual", "preprocess_cfg.json"), preprocess_cfg(224))
        return d, dict(options={}, family="mclip", image_batch=None, text_batch=None, clean="whitespace", warns=[])
    if name == "nllb":
        langs = ["eng_Latn", "fra_Latn", "deu_Latn"]
        vocab = unigram_tokenizer(d, ["<s>", "<pad>", "</s>", "<unk>"], "$A </s>", "<pad>", added=langs)
        gen_clip.save(gen_clip.visual(TINY, rng), os.path.join(d, "visual", "model.onnx"))
        gen_clip.save(gen_clip.textual(TINY, rng, vocab=vocab, pool="first", id_type=TensorProto.INT64),
                      os.path.join(d, "textual", "model.onnx"))
        write_json(os.path.join(d, "config.json"), {
            "embed_dim": dim, "custom_text": True, "init_logit_bias": -10,
            "vision_cfg": {"image_size": 224},
            "text_cfg": {"hf_model_name": "facebook/nllb-200-distilled-600M",
                         "hf_tokenizer_name": "facebook/nllb-200-distilled-600M"}})
        write_json(os.path.join(d, "visual", "preprocess_cfg.json"), preprocess_cfg(224))
        return d, dict(options={"language": "fra_Latn", "logit_scale": 50.0, "logit_bias": -5.0}, family="nllb",
                       image_batch=None, text_batch=None, clean="whitespace", language="fra_Latn",
                       logit_scale=50.0, logit_bias=-5.0, warns=[])
    raise ValueError(name)


FIXTURES = ["immich-static", "immich-dynamic", "external", "siglip", "mclip", "nllb"]


def broken(out):
    """Two folders for the error paths, not in the manifest: `external-missing` lacks one of its
    external data files; `refuses-batches` has a visual graph that declares a symbolic batch
    but reshapes to one row, so ONNX Runtime refuses every call of more than one image."""
    from onnx import helper, numpy_helper
    miss = os.path.join(out, "external-missing")
    shutil.rmtree(miss, ignore_errors=True)
    shutil.copytree(os.path.join(out, "external"), miss)
    os.remove(os.path.join(miss, "textual", "token_embedding_2"))
    d = os.path.join(out, "refuses-batches")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(out, "immich-dynamic"), d)
    # embedding = mean colour x w + row (batch - 1) of a one-row table: out of bounds from two
    # images on, which no shape check sees before the run
    w = np.random.default_rng(0).standard_normal((3, TINY["embed_dim"])).astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Shape", ["image"], ["n"], start=0, end=1),
             helper.make_node("Sub", ["n", "one"], ["last"]),
             helper.make_node("Gather", ["table", "last"], ["row"], axis=0),
             helper.make_node("MatMul", ["m", "w"], ["mw"]),
             helper.make_node("Add", ["mw", "row"], ["image_embedding"])]
    graph = helper.make_graph(
        nodes, "refuses_batches",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("image_embedding", TensorProto.FLOAT, ["batch", TINY["embed_dim"]])],
        [numpy_helper.from_array(np.array([1], np.int64), "one"), numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.ones((1, TINY["embed_dim"]), np.float32), "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnx
    onnx.save(model, os.path.join(d, "visual", "model.onnx"))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.abspath(sys.argv[1])
    manifest = []
    for seed, name in enumerate(FIXTURES, start=1):
        folder, spec = build(out, name, seed)
        manifest.append(dict(name=name, folder=folder, external=name == "external", **spec))
    write_json(os.path.join(out, "manifest.json"), manifest)
    broken(out)
    # (onnx writes external data files readable by their owner only; the database server reads them)
    for d, _, files in os.walk(out):
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    print(f"wrote {len(manifest)} fixtures to {out}")


if __name__ == "__main__":
    main()
