#!/usr/bin/env python3
"""Write a CLIP model folder with random weights, in the open_clip / immich export layout.

    gen_clip.py tiny     <out-dir> [--seed N]   # committed test model, a few MB
    gen_clip.py vit-b-32 <out-dir> [--seed N]   # full ViT-B/32 sizes, for benchmarks (~600 MB)
    gen_clip.py vit-b-32 <out-dir> --batch 1    # the same with a fixed batch of 1, as immich exports

The graphs follow open_clip's VisionTransformer / TextTransformer as exported to
ONNX: conv patch embedding, class token, position embeddings, pre-norm residual
blocks with multi-head attention and QuickGELU MLPs, ln_post on the class token
and a projection; the text tower has a causal mask, ln_final, pooling at the
end-of-text token (argmax of the ids, as open_clip does) and a projection.
Compute cost does not depend on the weights, so random weights from a seed are
enough for tests and benchmarks. Only onnx + numpy (+ tokenizers for the
tokenizer.json) are needed; no torch.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

SIZES = {
    # image_size, patch, vision width/layers/heads, text width/layers/heads, embed_dim
    "tiny": dict(image_size=224, patch=32, v_width=32, v_layers=2, v_heads=4,
                 t_width=16, t_layers=2, t_heads=2, embed_dim=64),
    "vit-b-32": dict(image_size=224, patch=32, v_width=768, v_layers=12, v_heads=12,
                     t_width=512, t_layers=12, t_heads=8, embed_dim=512),
}
CONTEXT = 77
VOCAB = 49408


class Graph:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self, rng, gelu="quick"):
        self.rng = rng
        self.gelu = gelu
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def weight(self, base, shape, std):
        return self.const(base, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, op_type, inputs, base=None, **attrs):
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def layer_norm(self, x, width):
        g = self.const("ln_w", np.ones(width, np.float32))
        b = self.const("ln_b", np.zeros(width, np.float32))
        return self.op("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-5)

    def linear(self, x, din, dout, bias=True):
        w = self.weight("w", (din, dout), din ** -0.5)
        y = self.op("MatMul", [x, w])
        if bias:
            y = self.op("Add", [y, self.const("b", np.zeros(dout, np.float32))])
        return y

    def attention(self, x, width, heads, mask=None):
        dh = width // heads
        qkv = self.linear(x, width, 3 * width)
        q, k, v = (self.name(s) for s in "qkv")
        self.nodes.append(helper.make_node("Split", [qkv, self.const("split", np.array([width] * 3, np.int64))],
                                           [q, k, v], axis=-1))
        shape = self.const("shape", np.array([0, 0, heads, dh], np.int64))

        def heads_first(t):
            return self.op("Transpose", [self.op("Reshape", [t, shape])], perm=[0, 2, 1, 3])

        q, k, v = heads_first(q), heads_first(k), heads_first(v)
        q = self.op("Mul", [q, self.const("scale", np.array(dh ** -0.5, np.float32))])
        att = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        if mask is not None:
            att = self.op("Add", [att, mask])
        att = self.op("Softmax", [att], axis=-1)
        y = self.op("Transpose", [self.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
        y = self.op("Reshape", [y, self.const("shape", np.array([0, 0, width], np.int64))])
        return self.linear(y, width, width)

    def block(self, x, width, heads, mask=None):
        x = self.op("Add", [x, self.attention(self.layer_norm(x, width), width, heads, mask)])
        h = self.linear(self.layer_norm(x, width), width, 4 * width)
        if self.gelu == "quick":
            # QuickGELU, as in OpenAI's CLIP: x * sigmoid(1.702 x)
            h = self.op("Mul", [h, self.op("Sigmoid", [self.op("Mul", [h, self.const("k", np.array(1.702, np.float32))])])])
        else:
            # exact GELU, x * (1 + erf(x / sqrt 2)) / 2, as torch.onnx exports nn.GELU
            e = self.op("Erf", [self.op("Div", [h, self.const("sqrt2", np.array(2 ** 0.5, np.float32))])])
            h = self.op("Mul", [self.op("Mul", [h, self.op("Add", [e, self.const("one", np.array(1, np.float32))])]),
                                self.const("half", np.array(0.5, np.float32))])
        return self.op("Add", [x, self.linear(h, 4 * width, width)])


def visual(cfg, rng, batch="batch", out="embedding", gelu="quick"):
    """`batch`: a symbolic name or a fixed size; `out`: the output's name."""
    g = Graph(rng, gelu)
    s, p, w = cfg["image_size"], cfg["patch"], cfg["v_width"]
    grid = s // p
    x = g.op("Conv", ["image", g.weight("conv1", (w, 3, p, p), (3 * p * p) ** -0.5)],
             kernel_shape=[p, p], strides=[p, p])
    x = g.op("Reshape", [x, g.const("shape", np.array([0, w, grid * grid], np.int64))])
    x = g.op("Transpose", [x], perm=[0, 2, 1])
    # class token, broadcast to the batch: Expand needs [N, 1, w] built from the input's shape
    n = g.op("Slice", [g.op("Shape", ["image"]), g.const("s", np.array([0], np.int64)), g.const("e", np.array([1], np.int64))])
    cls_shape = g.op("Concat", [n, g.const("rest", np.array([1, w], np.int64))], axis=0)
    cls = g.op("Expand", [g.weight("class_embedding", (1, 1, w), w ** -0.5), cls_shape])
    x = g.op("Concat", [cls, x], axis=1)
    x = g.op("Add", [x, g.weight("positional_embedding", (1, grid * grid + 1, w), w ** -0.5)])
    x = g.layer_norm(x, w)
    for _ in range(cfg["v_layers"]):
        x = g.block(x, w, cfg["v_heads"])
    x = g.op("Gather", [x, g.const("cls_idx", np.array(0, np.int64))], axis=1)
    x = g.layer_norm(x, w)
    proj = g.weight("proj", (w, cfg["embed_dim"]), w ** -0.5)
    g.nodes.append(helper.make_node("MatMul", [x, proj], [out]))
    return helper.make_graph(
        g.nodes, "clip_visual",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, s, s])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, cfg["embed_dim"]])],
        g.inits)


def textual(cfg, rng, batch="batch", out="embedding", gelu="quick", context=CONTEXT, vocab=VOCAB,
            pool="argmax", id_type=TensorProto.INT32, with_mask=False):
    """The text tower. `pool`: "argmax" (CLIP: the end-of-text token has the largest id), "last"
    (SigLIP), "first" (a CLS pooler, nllb-clip) or "mean" (M-CLIP: mean over the attention mask,
    an input of its own with `with_mask`, named input_ids / attention_mask as immich exports it).
    CLIP's tower is causal; the others are not."""
    g = Graph(rng, gelu)
    w = cfg["t_width"]
    ids = "input_ids" if with_mask else "text"
    ids64 = g.op("Cast", [ids], to=TensorProto.INT64)
    x = g.op("Gather", [g.weight("token_embedding", (vocab, w), 0.02), ids64], axis=0)
    x = g.op("Add", [x, g.weight("positional_embedding", (context, w), 0.01)])
    mask_name = None
    if pool == "argmax":
        mask = np.triu(np.full((context, context), -np.inf, np.float32), 1)
        mask_name = g.const("attn_mask", mask)
    for _ in range(cfg["t_layers"]):
        x = g.block(x, w, cfg["t_heads"], mask_name)
    x = g.layer_norm(x, w)
    if pool == "argmax":
        # pool at the end-of-text token: it has the largest id, so argmax finds it (open_clip does the same)
        eot = g.op("ArgMax", [g.op("Cast", [ids], to=TensorProto.FLOAT)], axis=1, keepdims=1)
        x = g.op("GatherND", [x, eot], batch_dims=1)
    elif pool in ("last", "first"):
        x = g.op("Gather", [x, g.const("pool_idx", np.array(context - 1 if pool == "last" else 0, np.int64))], axis=1)
    else:
        m = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT), g.const("ax", np.array([2], np.int64))])
        total = g.op("ReduceSum", [g.op("Mul", [x, m]), g.const("ax", np.array([1], np.int64))], keepdims=0)
        x = g.op("Div", [total, g.op("ReduceSum", [m, g.const("ax", np.array([1], np.int64))], keepdims=0)])
    proj = g.weight("text_projection", (w, cfg["embed_dim"]), w ** -0.5)
    g.nodes.append(helper.make_node("MatMul", [x, proj], [out]))
    inputs = [helper.make_tensor_value_info(ids, id_type, [batch, context])]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", id_type, [batch, context]))
    return helper.make_graph(
        g.nodes, "clip_textual", inputs,
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, cfg["embed_dim"]])],
        g.inits)


def save(graph, path, external=None):
    """`external`: None (weights inside), "one" (one data file beside the graph) or "each" (a
    file per tensor), as onnx writes towers over 2 GiB."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pg_clip gen_clip.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if external is None:
        onnx.save(model, path)
    else:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=external == "one",
                  location=os.path.basename(path) + ".data" if external == "one" else None, size_threshold=1024)


def bytes_to_unicode():
    """GPT-2 / CLIP byte-to-unicode table (copied from OpenAI CLIP's simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer(bpe_path, out_dir):
    """tokenizer.json equal to what transformers' CLIPConverter writes for openai/clip-vit-base-patch32."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB
    tok = Tokenizer(models.BPE(vocab={v: i for i, v in enumerate(vocab)}, merges=merges,
                               continuing_subword_prefix="", end_of_word_suffix="</w>",
                               fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", VOCAB - 1), ("<|startoftext|>", VOCAB - 2),
                                                      add_prefix_space=False, trim_offsets=False)
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>", "model_max_length": CONTEXT, "do_lower_case": True}, f, indent=2)


def find_bpe():
    """The CLIP BPE merges ship in PyPI packages; look for open_clip's copy, then OpenAI's."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in [os.environ.get("CLIP_BPE", ""), os.path.join(here, "bpe_simple_vocab_16e6.txt.gz")]:
        if cand and os.path.exists(cand):
            return cand
    for mod in ("open_clip", "clip"):
        try:
            import importlib.util
            spec = importlib.util.find_spec(mod)
        except Exception:
            spec = None
        if spec and spec.submodule_search_locations:
            p = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
            if os.path.exists(p):
                return p
    sys.exit("gen_clip.py: CLIP BPE merges not found; set CLIP_BPE to bpe_simple_vocab_16e6.txt.gz "
             "(shipped in the open_clip_torch wheel: pip download --no-deps open_clip_torch)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size", choices=sorted(SIZES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bpe", default=None)
    ap.add_argument("--batch", type=int, default=None,
                    help="a fixed batch dimension (immich's exports since 2025 have 1); default symbolic")
    a = ap.parse_args()
    cfg = SIZES[a.size]
    rng = np.random.default_rng(a.seed)
    batch = a.batch or "batch"
    save(visual(cfg, rng, batch=batch), os.path.join(a.out, "visual", "model.onnx"))
    save(textual(cfg, rng, batch=batch), os.path.join(a.out, "textual", "model.onnx"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump({"embed_dim": cfg["embed_dim"],
                   "vision_cfg": {"image_size": cfg["image_size"], "layers": cfg["v_layers"],
                                  "width": cfg["v_width"], "patch_size": cfg["patch"]},
                   "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "width": cfg["t_width"],
                                "heads": cfg["t_heads"], "layers": cfg["t_layers"]}}, f, indent=2)
    with open(os.path.join(a.out, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump({"size": [cfg["image_size"], cfg["image_size"]], "mode": "RGB", "mean": MEAN, "std": STD,
                   "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}, f, indent=2)
    write_tokenizer(a.bpe or find_bpe(), os.path.join(a.out, "textual"))
    print(f"wrote {a.size} CLIP with random weights (seed {a.seed}) to {a.out}")


if __name__ == "__main__":
    main()
