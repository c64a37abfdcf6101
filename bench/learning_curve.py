#!/usr/bin/env python3
"""Learning curve of a packaged-vs-loose classifier with the demo model: held-out accuracy
against the number of labels, labels picked by active learning (clip.next_to_label: the most
uncertain first) against labels picked at random, five seeds. Everything through SQL on the
running cluster (PGHOST/PGPORT/PGUSER, database PGDATABASE).

    learning_curve.py DATA_DIR OUT_DIR [--pool 1200] [--test 600] [--seeds 5] [--max-labels 200]

Prints a Markdown table; writes OUT_DIR/learning-curve.md and OUT_DIR/learning-curve.png.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "models", "synth"))
import generate  # noqa: E402
MODEL = "demo-clip"
START, STEP = 20, 10   # first fit from 20 random labels, then 10 more per round
TARGET = 0.95
# this model's packaging is easy: labels to reach 99% tell the strategies apart too
TARGETS = (TARGET, 0.99)


def psql(sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1"],
                       input=f"SET pg_clip.model = '{MODEL}'; SET client_min_messages = warning;\n" + sql,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"learning_curve: SQL failed:\n{sql[:2000]}\n{r.stderr}")
    return [line.split("|") for line in r.stdout.splitlines() if line]


def setup(data, n):
    gen = generate.__file__
    if not os.path.exists(os.path.join(data, "labels.csv")) or \
            sum(1 for _ in open(os.path.join(data, "labels.csv"))) != n + 1:
        subprocess.run([sys.executable, gen, "--seed", "3", "--count", str(n), "--kind", "scenes", "--out", data],
                       check=True, stdout=subprocess.DEVNULL)
    d = os.path.abspath(data)
    psql(f"""
CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
SELECT 1 FROM clip.register_model('{MODEL}', '{MODEL}') WHERE NOT EXISTS (SELECT FROM clip.model WHERE name = '{MODEL}');
SELECT clip.drop_collection('lc') FROM clip.collection WHERE name = 'lc';
DROP TABLE IF EXISTS lc_images;
{generate.table_sql("lc_images", d)}SELECT clip.add_collection('lc', 'lc_images', 'id', 'image');
SELECT count(*) FROM clip.load_vocabulary_file('demo', 'demo.yaml');
SELECT clip.attach_vocabulary('lc', 'demo');""")
    psql("CALL clip.refresh('lc');")


def run(strategy, seed, pool, test, max_labels):
    """Accuracy on the test images after each round; returns [(labels, accuracy)]."""
    clf = f"lc_{strategy}_{seed}"
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(pool))
    pool_set = set(pool)
    psql(f"DELETE FROM clip.label WHERE collection = 'lc' AND classifier = '{clf}';")
    labelled, curve = [], []
    while True:
        if not labelled:
            new = order[:START]
        elif strategy == "random":
            done = set(labelled)
            new = [i for i in order if i not in done][:STEP]
        else:
            # the most uncertain unlabelled images, the test images skipped (asking for STEP more
            # than there are test images always leaves STEP from the pool)
            new = [int(r[0]) for r in psql(f"SELECT image_id FROM clip.next_to_label('lc', '{clf}', {STEP + len(test)})")
                   if int(r[0]) in pool_set][:STEP]
        labelled += new
        ids = ",".join(str(i) for i in new)
        acc = float(psql(f"""
SELECT clip.import_labels('lc', '{clf}', 'SELECT id, packaged FROM lc_images WHERE id IN ({ids})');
SELECT 1 FROM clip.fit_classifier('lc', '{clf}', '{{"folds": 2}}');
SELECT avg((clip.predict('{clf}', id) = packaged)::int) FROM lc_images WHERE id = ANY (ARRAY{test});""")[-1][0])
        curve.append((len(labelled), acc))
        if len(labelled) >= max_labels:
            return curve


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--pool", type=int, default=1200)
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-labels", type=int, default=200)
    a = ap.parse_args()
    setup(a.data, a.pool + a.test)
    ids = [int(r[0]) for r in psql("SELECT id FROM lc_images ORDER BY md5('split' || id)")]
    test, pool = ids[:a.test], ids[a.test:]
    zero = float(psql(f"""
SELECT avg((CASE WHEN p.confidence >= 0.5 THEN 'packaged' ELSE 'loose' END = i.packaged)::int)
FROM lc_images i JOIN clip.feature_image_attribute p ON p.collection = 'lc' AND p.image_id = i.id AND p.attribute_code = 'packaged'
WHERE i.id = ANY (ARRAY{test})""")[0][0])
    # the ceiling: every pool image labelled
    psql(f"""DELETE FROM clip.label WHERE collection = 'lc' AND classifier = 'lc_all';
SELECT clip.import_labels('lc', 'lc_all', 'SELECT id, packaged FROM lc_images WHERE id = ANY (ARRAY{pool})');
SELECT 1 FROM clip.fit_classifier('lc', 'lc_all', '{{}}');""")
    ceiling = float(psql(f"SELECT avg((clip.predict('lc_all', id) = packaged)::int) FROM lc_images WHERE id = ANY (ARRAY{test})")[0][0])
    curves = {s: [run(s, seed, pool, test, a.max_labels) for seed in range(a.seeds)] for s in ("random", "active")}
    counts = [n for n, _ in curves["random"][0]]
    acc = {s: np.array([[v for _, v in c] for c in curves[s]]) for s in curves}

    def needed(s, target):
        """Labels at which the accuracy first reaches `target`, per seed (None: not within the run)."""
        out = []
        for row in acc[s]:
            hit = [n for n, v in zip(counts, row) if v >= target]
            out.append(hit[0] if hit else None)
        return out

    lines = [f"Packaged vs loose, demo model, {a.pool} unlabelled images to pick from, {a.test} held-out test images, "
             f"{a.seeds} seeds; zero-shot (demo.yaml `packaging` group) {zero:.3f}; every pool image labelled "
             f"({a.pool}) {ceiling:.3f}.", "",
             "| labels | random: accuracy (mean ± sd) | active: accuracy (mean ± sd) |", "|---:|---:|---:|"]
    for j, n in enumerate(counts):
        if n in (20, 30, 40, 50, 60, 80, 100, 120, 150, 200) or n == counts[-1]:
            lines.append(f"| {n} | {acc['random'][:, j].mean():.3f} ± {acc['random'][:, j].std():.3f} | "
                         f"{acc['active'][:, j].mean():.3f} ± {acc['active'][:, j].std():.3f} |")
    lines.append("")
    for target in TARGETS:
        for s in ("random", "active"):
            nd = needed(s, target)
            reached = [x for x in nd if x is not None]
            lines.append(f"- {s}: labels to reach {target:.0%} per seed: {', '.join(str(x) if x else '-' for x in nd)}"
                         + (f" (median {int(np.median(reached))})" if len(reached) == len(nd) else
                            f" ({len(nd) - len(reached)} of {len(nd)} seeds not within {a.max_labels})"))
    text = "\n".join(lines)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "learning-curve.md"), "w") as f:
        f.write(text + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for s, colour in (("random", "tab:grey"), ("active", "tab:blue")):
        mean, sd = acc[s].mean(0), acc[s].std(0)
        ax.plot(counts, mean, label=f"{s} ({'clip.next_to_label' if s == 'active' else 'seeded sample'})", color=colour)
        ax.fill_between(counts, mean - sd, mean + sd, color=colour, alpha=0.2)
    ax.axhline(zero, color="tab:orange", ls="--", label="zero-shot group")
    ax.axhline(ceiling, color="black", ls=":", label=f"all {a.pool} labelled")
    ax.axhline(TARGET, color="tab:red", lw=0.6)
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"packaged vs loose, demo model ({a.seeds} seeds, mean ± sd)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "learning-curve.png"))


if __name__ == "__main__":
    main()
