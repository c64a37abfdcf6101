#!/usr/bin/env python3
"""Reference figures for pg_clip's projection head (core/src/learn/projection.rs), from PyTorch.

    .deps/export-venv/bin/python tests/reference/make_projection_golden.py   (torch, as models/synth/train.py)

Writes tests/golden/projection/head.json: a small head (input 8, hidden 6, output 4) with
PyTorch's default Linear initialisation, 8 feature rows of 4 classes, and what PyTorch computes
for them: the head's outputs (rows L2-normalised, Linear, GELU with approximate="tanh", Linear,
L2-normalised), the SupCon loss at temperature 0.5 (Khosla et al. 2020, eq. 2, "L_out": for each
anchor, minus the mean over its positives of the log softmax over every other row; the mean over
the anchors; as their SupConLoss with base_temperature equal to the temperature), its gradient
with respect to every weight (autograd), and the weights after one torch.optim.AdamW step (lr
0.01, weight_decay 0.1, PyTorch's betas and eps). The Rust unit tests compute the same and
compare.
"""
import json
import os

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "projection", "head.json")
T, LR, WD = 0.5, 0.01, 0.1


def supcon(y, labels, t):
    n = y.shape[0]
    s = y @ y.T / t
    eye = torch.eye(n, dtype=torch.bool)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = s - torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    anchors = positive.sum(1) > 0
    per_anchor = -(log_prob * positive).sum(1)[anchors] / positive.sum(1)[anchors]
    return per_anchor.mean()


def main():
    torch.manual_seed(3)
    torch.set_default_dtype(torch.float64)
    l1, l2 = torch.nn.Linear(8, 6), torch.nn.Linear(6, 4)
    x = torch.randn(8, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

    def head(features):
        return F.normalize(l2(F.gelu(l1(F.normalize(features, dim=1)), approximate="tanh")), dim=1)

    y = head(x)
    loss = supcon(y, labels, T)
    loss.backward()
    params = [l1.weight, l1.bias, l2.weight, l2.bias]
    before = [p.detach().clone() for p in params]
    grads = [p.grad.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)
    opt.step()
    flat = lambda ts: [t.reshape(-1).tolist() for t in ts]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({
            "torch": torch.__version__, "temperature": T, "lr": LR, "weight_decay": WD,
            "sizes": [8, 6, 4], "features": x.tolist(), "labels": labels.tolist(),
            "weights": flat(before), "projected": y.detach().tolist(), "loss": loss.item(),
            "gradients": flat(grads), "after_adamw": flat([p.detach() for p in params]),
        }, f, indent=1)
    print(f"wrote {OUT}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
