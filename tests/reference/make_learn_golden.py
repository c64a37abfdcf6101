#!/usr/bin/env python3
"""Reference figures for pg_clip's learning core (issue #5), from scikit-learn.

    .venv/bin/python tests/reference/make_learn_golden.py     (scikit-learn from bench/requirements.txt)

Writes tests/golden/learn/:
  mixture.f32   500 x 512 float32 little-endian rows: a Gaussian mixture of 3 classes (200, 150,
                150 rows) in 512 dimensions, each row L2-normalised like a CLIP embedding, in a
                shuffled order; then 320 rows of 8 well-separated clusters (40 each), the same way
  mixture.json  labels, the train/test split, and what scikit-learn gives on it:
                - logistic regression (StandardScaler, then LogisticRegression lbfgs, L2) for
                  classes 0 vs 1 at C = 1, the same with C = 0.05 and class_weight='balanced',
                  and all three classes (multinomial) at C = 1: test accuracy, test log loss and
                  the predicted probabilities of the first 10 test rows
                - KMeans (k-means++, n_init 4, random_state 0) for k = 3, 8 and 12 on the
                  clusters: best inertia
                - "photos": the test model's embeddings of the 17 sample and edge-case images
                  (tests/golden/embeddings.json): logistic regression of cat / not cat at C = 1
                  (probabilities of all 17) and KMeans k = 3 (best inertia)
The Rust tests fit the same models on the same rows and compare (core/tests/learn.rs).
"""
import json
import os

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "learn")
DIM, SIZES, TRAIN = 512, (200, 150, 150), 350


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    # class centres close enough that the classes overlap: accuracy well below 1, so that log
    # loss and probabilities carry information
    centres = rng.normal(0, 0.12, (len(SIZES), DIM))
    x = np.concatenate([c + rng.normal(0, 1, (n, DIM)) for c, n in zip(centres, SIZES)])
    y = np.concatenate([np.full(n, i) for i, n in enumerate(SIZES)])
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    blobs = rng.normal(0, 1, (8, DIM))
    z = np.concatenate([b + rng.normal(0, 1, (40, DIM)) for b in blobs])[rng.permutation(320)]
    z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    np.concatenate([x, z]).astype("<f4").tofile(os.path.join(OUT, "mixture.f32"))

    figures = {"rows": int(len(y)), "cluster_rows": int(len(z)), "dim": DIM, "train": TRAIN, "labels": y.tolist(), "logreg": [], "kmeans": []}
    for name, classes, c, weight in [("binary", [0, 1], 1.0, None), ("binary_balanced", [0, 1], 0.05, "balanced"),
                                     ("multinomial", [0, 1, 2], 1.0, None)]:
        train = [i for i in range(TRAIN) if y[i] in classes]
        test = [i for i in range(TRAIN, len(y)) if y[i] in classes]
        scaler = StandardScaler().fit(x[train].astype(np.float64))
        model = LogisticRegression(C=c, class_weight=weight, max_iter=1000, tol=1e-8)
        model.fit(scaler.transform(x[train].astype(np.float64)), y[train])
        proba = model.predict_proba(scaler.transform(x[test].astype(np.float64)))
        figures["logreg"].append({
            "name": name, "classes": classes, "C": c, "class_weight": weight,
            "accuracy": accuracy_score(y[test], model.classes_[proba.argmax(1)]),
            "log_loss": log_loss(y[test], proba, labels=classes),
            "proba_first_10": proba[:10].tolist(),
        })
    for k in (3, 8, 12):
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(z.astype(np.float64))
        figures["kmeans"].append({"k": k, "n_init": 4, "inertia": float(km.inertia_)})
    golden = json.load(open(os.path.join(ROOT, "tests", "golden", "embeddings.json")))["images"]
    names = sorted(golden)
    p = np.array([golden[n] for n in names], dtype=np.float32).astype(np.float64)
    cat = np.array([int("cat" in n or "chelsea" in n) for n in names])
    scaler = StandardScaler().fit(p)
    model = LogisticRegression(C=1.0, max_iter=1000, tol=1e-8).fit(scaler.transform(p), cat)
    km = KMeans(n_clusters=3, n_init=4, random_state=0).fit(p)
    figures["photos"] = {"names": names, "cat": cat.tolist(), "proba": model.predict_proba(scaler.transform(p)).tolist(),
                         "kmeans3_inertia": float(km.inertia_)}
    with open(os.path.join(OUT, "mixture.json"), "w") as f:
        json.dump(figures, f, indent=1)
        f.write("\n")
    for r in figures["logreg"]:
        print(r["name"], "accuracy", round(r["accuracy"], 3), "log_loss", round(r["log_loss"], 4))
    for r in figures["kmeans"]:
        print("kmeans k", r["k"], "inertia", round(r["inertia"], 4))


if __name__ == "__main__":
    main()
