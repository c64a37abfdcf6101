#!/usr/bin/env python3
"""Write images of pg_clip's synthetic world and their labels:

    generate.py --seed S --count N --out DIR [--kind mixed|scenes|frames|cards|lookalikes]

DIR gets the images (JPEG and PNG, several sizes and aspect ratios) and DIR/labels.csv with
columns file, caption, shape, colour, count, background, style, packaged, card. Image i of seed S
is the same whatever N is (its generator is seeded with (S, i)).

Kinds: `mixed` (default) scenes with some cards among them, as training sees them; `scenes`
shapes only; `frames` camera frames of cards; `cards` the clean card catalogue (N ignored:
one file per card, card-KK.png, the reference set of identification); `lookalikes` N variants
of card S that differ only in their small shapes and title (lookalike-VV.png), the hard case of
identification.
"""
import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402

COLUMNS = ["file", "caption", "shape", "colour", "count", "background", "style", "packaged", "card"]


def table_sql(table, folder, extra=""):
    """psql commands that make `table` (id, the label columns, image) from a folder this script
    wrote; `extra`: more column definitions. The server reads the files (pg_read_binary_file)."""
    cols = ", ".join(COLUMNS)
    return f"""CREATE TABLE {table} (id serial PRIMARY KEY, file text, caption text, shape text, colour text, count int,
    background text, style text, packaged text, card text, {extra}image bytea);
\\copy {table} ({cols}) FROM '{folder}/labels.csv' WITH (FORMAT csv, HEADER, FORCE_NOT_NULL (card))
UPDATE {table} SET image = pg_read_binary_file('{folder}/' || file);
"""


def draw(kind, seed, i):
    rng = np.random.default_rng([seed, i])
    if kind == "mixed":
        return rng, world.sample(rng)
    if kind == "scenes":
        return rng, world.scene(rng)
    if kind == "frames":
        return rng, world.card_sample(rng, frame=True)
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", choices=["mixed", "scenes", "frames", "cards", "lookalikes"], default="mixed")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    if a.kind == "cards":
        for k in range(world.N_CARDS):
            name = f"card-{k:02d}.png"
            world.card_image(k).save(os.path.join(a.out, name))
            rows.append(dict(world.card_attrs(k, False), file=name,
                             caption=world.card_caption(np.random.default_rng(k), k, False)))
    elif a.kind == "lookalikes":
        for v in range(a.count):
            name = f"lookalike-{v:02d}.png"
            world.card_image(a.seed, design=world.lookalike_design(a.seed, v)).save(os.path.join(a.out, name))
            rows.append(dict(world.card_attrs(a.seed, False), file=name, caption=f"variant {v} of card {a.seed}"))
    else:
        for i in range(a.count):
            rng, (img, attrs, caption) = draw(a.kind, a.seed, i)
            # photos mostly as JPEG, drawings mostly as PNG, as such files usually are
            jpeg = rng.random() < (0.85 if attrs["style"] == "photo" else 0.3)
            name = f"{a.seed}-{i:05d}." + ("jpg" if jpeg else "png")
            path = os.path.join(a.out, name)
            if jpeg:
                img.save(path, quality=int(rng.integers(75, 95)))
            else:
                img.save(path)
            rows.append(dict(attrs, file=name, caption=caption))
    with open(os.path.join(a.out, "labels.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} images ({a.kind}, seed {a.seed}) to {a.out}")


if __name__ == "__main__":
    main()
