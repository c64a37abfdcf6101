#!/usr/bin/env python3
"""Part (7) of make bench, the reference side: scikit-learn on the same rows as pg_clip.

    learn_reference.py gen DIR            write DIR/rows.txt (id, class, vector literal) for COPY
    learn_reference.py run DIR            time scikit-learn on DIR/rows.txt, print "learn ..." lines

The rows: 45,000 unit vectors in 512 dimensions, a Gaussian mixture of 8 classes (seeded);
the first 1,000 rows of classes 0 and 1 are the labelled ones. Timed here, in one process, each the median of three runs:
  fit   StandardScaler + LogisticRegression(lbfgs, C=1, max_iter=100), 5-fold stratified
        cross-validation (accuracy, precision, recall, f1, roc_auc, log loss) then a final fit
  predict  predict_proba over the 45,000 rows
  kmeans   KMeans(k, n_init=4, random_state=0) for k = 2, 8, 64
  load     reading the 45,000 embeddings out of PostgreSQL (psql COPY) into numpy, which an
           application using scikit-learn has to do first
"""
import os
import statistics
import subprocess
import sys
import time

import numpy as np

N, DIM, CLASSES, LABELLED = 45000, 512, 8, 1000


def gen(d):
    rng = np.random.default_rng(11)
    centres = rng.normal(0, 0.15, (CLASSES, DIM))
    y = rng.integers(0, CLASSES, N)
    x = centres[y] + rng.normal(0, 1, (N, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    with open(os.path.join(d, "rows.txt"), "w") as f:
        for i in range(N):
            f.write(f"{i + 1}\t{y[i]}\t[{','.join('%.7g' % v for v in x[i])}]\n")


def load(d):
    ids, ys, rows = [], [], []
    with open(os.path.join(d, "rows.txt")) as f:
        for line in f:
            i, c, v = line.rstrip("\n").split("\t")
            ids.append(int(i))
            ys.append(int(c))
            rows.append(np.fromstring(v[1:-1], sep=",", dtype=np.float32))
    return np.array(ids), np.array(ys), np.vstack(rows)


def run(d):
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_info

    # scikit-learn's normal kernels: an optimised BLAS (OpenBLAS or MKL) and OpenMP, with every
    # core, or the comparison is against a crippled reference
    pools = threadpool_info()
    kernels = ",".join(f"{p['internal_api']}:{p['num_threads']}" for p in pools)
    print(f"learn sklearn what=threadpool kernels={kernels}")
    blas = [p for p in pools if p["internal_api"] in ("openblas", "mkl")]
    if not blas or any(p["num_threads"] < os.cpu_count() for p in pools):
        sys.exit(f"learn_reference: scikit-learn is not running its normal kernels: {pools}")

    t = time.perf_counter()
    out = subprocess.run(["psql", "-X", "-At", "-c",
                          "COPY (SELECT embedding FROM clip.embedding WHERE collection = 'lrn' ORDER BY image_id) TO STDOUT"],
                         check=True, capture_output=True, text=True).stdout
    fetched = np.vstack([np.fromstring(line[1:-1], sep=",", dtype=np.float32) for line in out.splitlines()])
    print(f"learn sklearn what=load rows={len(fetched)} ms={(time.perf_counter() - t) * 1000:.1f}")

    _, y, x = load(d)
    labelled = np.flatnonzero(y < 2)[:LABELLED]
    xl, yl = x[labelled].astype(np.float64), y[labelled]
    def median3(f):
        # the median of three runs, as bench/learn.sh takes for pg_clip
        times, out = [], None
        for _ in range(3):
            t = time.perf_counter()
            out = f()
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times), out

    def fit():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=100))
        cv = cross_validate(model, xl, yl, cv=StratifiedKFold(5),
                            scoring=["accuracy", "precision", "recall", "f1", "roc_auc", "neg_log_loss"])
        return model.fit(xl, yl), cv

    ms, (model, cv) = median3(fit)
    print(f"learn sklearn what=fit rows={len(yl)} ms={ms:.1f} accuracy={cv['test_accuracy'].mean():.4f}")
    ms, p = median3(lambda: model.predict_proba(x.astype(np.float64)))
    print(f"learn sklearn what=predict rows={len(p)} ms={ms:.1f}")
    for k in (2, 8, 64):
        ms, km = median3(lambda: KMeans(n_clusters=k, n_init=4, random_state=0).fit(x))
        print(f"learn sklearn what=kmeans{k} rows={len(x)} ms={ms:.1f} inertia={km.inertia_:.2f} iterations={km.n_iter_}")


if __name__ == "__main__":
    {"gen": gen, "run": run}[sys.argv[1]](sys.argv[2])
