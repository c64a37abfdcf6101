#!/usr/bin/env python3
"""Export an open_clip model to a folder pg_clip (and immich) can load:

    export_open_clip.py <model> <pretrained> <out-dir> [--opset 18]
    export_open_clip.py ViT-B-32 openai models/ViT-B-32__openai
    export_open_clip.py ViT-B-16-SigLIP webli models/ViT-B-16-SigLIP__webli
    export_open_clip.py ViT-B-32 none /tmp/random-vit-b-32      # random weights, for tests

Unlike immich's exporter it writes:
  - graphs with a symbolic batch dimension, so pg_clip embeds a whole batch per call;
  - the activation the weights were trained with: OpenAI's weights with QuickGELU (open_clip
    builds plain `ViT-B-32` with exact GELU, which changes their vectors);
  - weights as ONNX external data (model.onnx.data) for a tower over 2 GiB;
  - the trained logit_scale (as the multiplier, exp of the parameter) and, for SigLIP, the
    trained logit_bias into config.json, so that pg_clip scores with the model's own sigmoid.

Needs torch, open_clip_torch and onnx (and transformers for models whose text_cfg names a
Hugging Face tokenizer); weights are downloaded by open_clip unless <pretrained> is `none`.
The CLIP BPE tokenizer.json is built from the merges file shipped inside open_clip.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TWO_GIB = 2 * 1024 ** 3


def save_graph(tmp_path, out_path, external_over):
    """The exported graph as one file, or with its weights in model.onnx.data when the tower is
    too large for one protobuf message (2 GiB)."""
    import onnx
    model = onnx.load(tmp_path)  # (reads any external data torch wrote beside it)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    if model.ByteSize() >= external_over:
        onnx.save_model(model, out_path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(out_path) + ".data", size_threshold=1024,
                        convert_attribute=True)
    else:
        onnx.save_model(model, out_path)
    onnx.checker.check_model(out_path)


def export(module, example, input_names, output, out_path, opset, external_over):
    import torch
    axes = {n: {0: "batch"} for n in input_names}
    axes[output] = {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(module, example, path, input_names=input_names, output_names=[output],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
        save_graph(path, out_path, external_over)


def create(name, pretrained, quick=None):
    """The open_clip model in eval mode, with the activation its weights were trained with
    (`quick` overrides: True for QuickGELU, False for exact GELU)."""
    import open_clip
    import torch
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        sys.exit(f"export_open_clip.py: open_clip has no model {name!r} (open_clip.list_models())")
    weights = None if pretrained == "none" else pretrained
    # OpenAI's weights were trained with QuickGELU; open_clip's plain configs use exact GELU
    if quick is None:
        quick = bool(cfg.get("quick_gelu")) or pretrained == "openai"
    torch.backends.mha.set_fastpath_enabled(False)
    model = open_clip.create_model(name, pretrained=weights, force_quick_gelu=quick,
                                   require_pretrained=weights is not None)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(cfg, quick_gelu=quick)


def export_model(model, cfg, out, opset=18, external_over=TWO_GIB - (64 << 20)):
    """Write the folder: both graphs, preprocess_cfg.json, config.json, the tokenizer files.
    A graph of `external_over` bytes or more keeps its weights in model.onnx.data."""
    import open_clip
    import torch

    sys.path.insert(0, HERE)
    import gen_clip  # the CLIP tokenizer.json writer

    cfg = dict(cfg, logit_scale=float(model.logit_scale.exp().reshape(-1)[0]))
    if getattr(model, "logit_bias", None) is not None:
        cfg["logit_bias"] = float(model.logit_bias.reshape(-1)[0])
    text_cfg = cfg.setdefault("text_cfg", {})
    ctx = text_cfg.get("context_length", 77)

    class Visual(torch.nn.Module):
        def forward(self, image):
            return model.encode_image(image, normalize=True)

    class Textual(torch.nn.Module):
        def forward(self, text):
            return model.encode_text(text, normalize=True)

    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
    os.makedirs(os.path.join(out, "textual"), exist_ok=True)
    export(Visual(), (torch.randn(2, 3, size, size),), ["image"], "embedding",
           os.path.join(out, "visual", "model.onnx"), opset, external_over)
    export(Textual(), (torch.ones(2, ctx, dtype=torch.int32),), ["text"], "embedding",
           os.path.join(out, "textual", "model.onnx"), opset, external_over)
    with open(os.path.join(out, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump(dict(pre, size=[size, size]), f, indent=2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if "hf_tokenizer_name" in text_cfg:
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(text_cfg["hf_tokenizer_name"]).save_pretrained(os.path.join(out, "textual"))
    else:
        bpe = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
        gen_clip.write_tokenizer(bpe, os.path.join(out, "textual"))
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("pretrained", help="an open_clip pretrained tag, a checkpoint file, or none")
    ap.add_argument("out")
    ap.add_argument("--opset", type=int, default=18)
    a = ap.parse_args()
    model, cfg = create(a.model, a.pretrained)
    cfg = export_model(model, cfg, a.out, a.opset)
    print(f"exported {a.model} ({a.pretrained}) to {a.out}: QuickGELU {cfg['quick_gelu']}, "
          f"logit_scale {cfg['logit_scale']:.2f}" + (f", logit_bias {cfg['logit_bias']:.2f}" if "logit_bias" in cfg else ""))


if __name__ == "__main__":
    main()
