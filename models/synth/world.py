"""The synthetic image world of pg_clip's demo model: shapes in colours, counts, backgrounds,
styles, packaged or loose, and trading cards, each with a caption.

Everything is a pure function of a seed (numpy's PCG64 and Pillow's drawing; no global state),
so generate.py, train.py, the semantic tests and the learning-curve benchmark draw the same
world from different seeds. The card catalogue does not depend on the seed: card `k` looks the
same in every set, as a real card does in every photo of it.
"""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "star", "heart", "cross", "hexagon", "crescent"]
COLOURS = {
    "red": (205, 35, 35), "orange": (240, 135, 25), "yellow": (240, 210, 30), "green": (40, 155, 55),
    "blue": (35, 75, 205), "purple": (125, 50, 170), "pink": (245, 125, 185), "black": (25, 25, 25),
}
BACKGROUNDS = ["plain", "gradient", "stripes", "texture"]
STYLES = ["illustration", "photo", "screenshot"]
N_CARDS = 48
CARD_ASPECT = 88 / 63  # height / width of a trading card
# (width, height) of scenes: square, landscape and portrait, small to medium
SCENE_SIZES = [(160, 160), (224, 224), (256, 192), (192, 256), (240, 180), (200, 200), (288, 216)]

# caption words: each attribute has synonyms, so that a prompt need not match the training
# captions word for word
SHAPE_WORDS = {
    "circle": (["circle", "disc"], ["circles", "discs"]),
    "square": (["square"], ["squares"]),
    "triangle": (["triangle"], ["triangles"]),
    "star": (["star"], ["stars"]),
    "heart": (["heart"], ["hearts"]),
    "cross": (["cross", "plus sign"], ["crosses", "plus signs"]),
    "hexagon": (["hexagon"], ["hexagons"]),
    "crescent": (["crescent", "moon"], ["crescents", "moons"]),
}
COLOUR_WORDS = {"red": ["red", "crimson"], "orange": ["orange"], "yellow": ["yellow"], "green": ["green"],
                "blue": ["blue"], "purple": ["purple", "violet"], "pink": ["pink"], "black": ["black"]}
COUNT_WORDS = {1: ["a", "one", "a single"], 2: ["two", "a pair of"], 3: ["three"], 4: ["four"]}
STYLE_WORDS = {"illustration": ["an illustration of", "a drawing of", "a flat illustration of", "clip art of"],
               "photo": ["a photo of", "a photograph of", "a snapshot of"],
               "screenshot": ["a screenshot of", "a screen capture of", "a screenshot showing"]}
STYLE_NOUNS = {"illustration": "an illustration", "photo": "a photo", "screenshot": "a screenshot"}
NEUTRAL = ["a picture of", "an image of"]
BACKGROUND_WORDS = {"plain": ["on a plain background", "on a plain white background", "on a solid background"],
                    "gradient": ["on a gradient background", "on a gradient"],
                    "stripes": ["on a striped background", "on stripes"],
                    "texture": ["on a textured background", "on a noisy background"]}
PACKAGE_WORDS = {"box": ["in a box", "in a cardboard box", "in its packaging", "packaged in a box"],
                 "blister": ["in a blister pack", "in a plastic blister", "in its packaging"],
                 "loose": ["loose", "without packaging", "unpackaged"]}


def lexicon():
    """Every word a caption can use: train.py keeps an embedding row for each of their tokens."""
    words = ["a", "an", "of", "on", "in", "with", "and", "the", "shape", "shapes", "card", "trading", "titled",
             "picture", "image", "photo", "table"]
    for table in (SHAPE_WORDS, COLOUR_WORDS, COUNT_WORDS, STYLE_WORDS, STYLE_NOUNS, BACKGROUND_WORDS, PACKAGE_WORDS):
        for v in table.values():
            for item in v if isinstance(v, (list, tuple)) else [v]:
                for phrase in item if isinstance(item, list) else [item]:
                    words.extend(phrase.replace(",", " ").split())
    return sorted(set(words))


# --- drawing ------------------------------------------------------------------------------

def jitter(rng, rgb, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def pale(rng):
    """A light, unsaturated background colour."""
    base = rng.integers(170, 246)
    return tuple(int(np.clip(base + rng.integers(-25, 26), 120, 255)) for _ in range(3))


def shape_points(shape, cx, cy, r, rot):
    """The outline of a shape as a polygon (circle and crescent are drawn as masks)."""
    def poly(n, start, radii):
        pts = []
        for i in range(n * len(radii)):
            a = start + rot + 2 * math.pi * i / (n * len(radii))
            rr = r * radii[i % len(radii)]
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if shape == "square":
        return poly(4, math.pi / 4, [1.0])
    if shape == "triangle":
        return poly(3, -math.pi / 2, [1.0])
    if shape == "hexagon":
        return poly(6, 0, [1.0])
    if shape == "star":
        return poly(5, -math.pi / 2, [1.0, 0.42])
    if shape == "cross":
        w = 0.34
        base = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    elif shape == "heart":
        base = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            base.append((x / 17, (y + 2) / 17))
    else:
        raise ValueError(shape)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in base]


def shape_mask(size, shape, cx, cy, r, rot):
    m = Image.new("L", size, 0)
    d = ImageDraw.Draw(m)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = cx + 0.45 * r * math.cos(rot), cy + 0.45 * r * math.sin(rot)
        d.ellipse([ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r], fill=0)
    else:
        d.polygon(shape_points(shape, cx, cy, r, rot), fill=255)
    return m


def background(rng, kind, size):
    w, h = size
    if kind == "plain":
        return Image.new("RGB", size, pale(rng))
    if kind == "gradient":
        a, b = np.array(pale(rng), float), np.array(pale(rng), float)
        if np.abs(a - b).sum() < 90:  # make the gradient visible
            b = np.clip(a + rng.choice([-1, 1]) * 70, 90, 255)
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (xx * math.cos(ang) + yy * math.sin(ang))
        t = (t - t.min()) / max(t.max() - t.min(), 1)
        return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))
    if kind == "stripes":
        a, b = np.array(pale(rng), float), np.array(pale(rng), float)
        if np.abs(a - b).sum() < 90:
            b = np.clip(a - 70, 80, 255)
        period = rng.uniform(0.06, 0.16) * min(w, h)
        ang = rng.choice([0, math.pi / 2, math.pi / 4, -math.pi / 4]) + rng.uniform(-0.1, 0.1)
        yy, xx = np.mgrid[0:h, 0:w]
        t = ((xx * math.cos(ang) + yy * math.sin(ang)) / period) % 1.0 < 0.5
        return Image.fromarray(np.where(t[..., None], a, b).astype(np.uint8))
    if kind == "texture":
        # a "photo" texture: smooth blotches (upsampled noise) with fine grain and a tint
        tint = np.array(pale(rng), float)
        coarse = rng.standard_normal((6, 6, 3)) * 28
        blotch = np.asarray(Image.fromarray(((coarse + 128).clip(0, 255)).astype(np.uint8)).resize(size, Image.BICUBIC), float) - 128
        grain = rng.standard_normal((h, w, 1)) * 16
        return Image.fromarray((tint - 20 + blotch + grain).clip(0, 255).astype(np.uint8))
    raise ValueError(kind)


def text_bars(draw, rng, x0, y0, x1, y1, colour, rows=None, bar_h=None):
    """Rows of text-like bars: what text looks like at thumbnail size."""
    h = y1 - y0
    bar_h = bar_h or max(2, int(h / 8))
    rows = rows or max(1, int(h // (bar_h * 2)))
    for i in range(rows):
        y = y0 + i * 2 * bar_h
        if y + bar_h > y1:
            break
        x = x0
        while x < x1:
            wlen = rng.integers(max(3, bar_h), max(4, bar_h * 5))
            if x + wlen > x1:
                break
            draw.rectangle([x, y, x + wlen, y + bar_h - 1], fill=colour)
            x += wlen + max(2, bar_h)


def place(rng, count, region, rmin, rmax):
    """Non-overlapping circles (cx, cy, r) inside region (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = region
    side = min(x1 - x0, y1 - y0)
    for _ in range(200):
        out = []
        for _ in range(count):
            r = rng.uniform(rmin, rmax) * side
            for _ in range(60):
                cx, cy = rng.uniform(x0 + r, x1 - r), rng.uniform(y0 + r, y1 - r)
                if all(math.hypot(cx - a, cy - b) > r + c + 2 for a, b, c in out):
                    out.append((cx, cy, r))
                    break
        if len(out) == count:
            return out
        rmax = rmin + (rmax - rmin) * 0.8
    raise RuntimeError("could not place shapes")


def paint(img, rng, mask, rgb, style):
    """Fill a shape mask onto img in the style: flat (illustration, screenshot) or shaded with a
    shadow (photo)."""
    w, h = img.size
    if style == "photo":
        shadow = mask.filter(ImageFilter.GaussianBlur(max(1, w / 80)))
        off = int(max(1, w / 60))
        shadow = Image.fromarray((np.asarray(shadow, float) * 0.45).astype(np.uint8)).transform(
            img.size, Image.AFFINE, (1, 0, -off, 0, 1, -off))
        img.paste((0, 0, 0), mask=shadow)
        box = mask.getbbox() or (0, 0, w, h)
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = box[0] + (box[2] - box[0]) * 0.3, box[1] + (box[3] - box[1]) * 0.3
        rad = max(box[2] - box[0], box[3] - box[1], 1)
        light = 1.25 - 0.55 * np.clip(np.hypot(xx - cx, yy - cy) / rad, 0, 1.2)
        fill = Image.fromarray((np.array(rgb, float) * light[..., None] + 12).clip(0, 255).astype(np.uint8))
        img.paste(fill, mask=mask)
    else:
        img.paste(rgb, mask=mask)
        if style == "illustration" and rng.random() < 0.5:
            edge = Image.fromarray(np.asarray(mask.filter(ImageFilter.MaxFilter(3)), np.int16)
                                   .__sub__(np.asarray(mask, np.int16)).clip(0, 255).astype(np.uint8))
            img.paste((20, 20, 20), mask=edge)


def photo_finish(img, rng):
    """Camera look: noise, a little blur, a vignette."""
    a = np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.3))), float)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    vig = 1 - 0.25 * (np.hypot((xx - w / 2) / w, (yy - h / 2) / h) * 1.4) ** 2
    a = a * vig[..., None] + rng.standard_normal(a.shape) * rng.uniform(4, 10)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def draw_objects(img, rng, shape, rgb, count, region, style):
    rmin, rmax = {1: (0.22, 0.36), 2: (0.14, 0.22), 3: (0.11, 0.17), 4: (0.10, 0.14)}[count]
    for cx, cy, r in place(rng, count, region, rmin, rmax):
        rot = rng.uniform(-0.35, 0.35) if shape != "crescent" else rng.uniform(0, 2 * math.pi)
        paint(img, rng, shape_mask(img.size, shape, cx, cy, r, rot), jitter(rng, rgb), style)


def draw_package(img, rng, kind, region):
    """A box or a blister card over `region`; returns the window the objects go in."""
    d = ImageDraw.Draw(img, "RGBA")
    x0, y0, x1, y1 = region
    bw, bh = x1 - x0, y1 - y0
    if kind == "box":
        card = jitter(rng, [(200, 160, 110), (235, 235, 235), (60, 90, 160), (170, 40, 40)][rng.integers(4)], 15)
        depth = int(bw * 0.08)
        # the box's top and side faces, darker, for depth
        dark = tuple(int(c * 0.7) for c in card)
        d.polygon([(x0, y0), (x0 + depth, y0 - depth), (x1 + depth, y0 - depth), (x1, y0)], fill=dark)
        d.polygon([(x1, y0), (x1 + depth, y0 - depth), (x1 + depth, y1 - depth), (x1, y1)], fill=tuple(int(c * 0.55) for c in card))
        d.rectangle([x0, y0, x1, y1], fill=card, outline=tuple(int(c * 0.4) for c in card), width=max(1, int(bw // 60)))
        win = (x0 + bw * 0.12, y0 + bh * 0.1, x1 - bw * 0.12, y0 + bh * 0.72)
        d.rectangle(win, fill=(250, 250, 250), outline=dark, width=max(1, int(bw // 80)))
        strip = (x0 + bw * 0.06, y0 + bh * 0.78, x1 - bw * 0.06, y1 - bh * 0.05)
    else:
        card = jitter(rng, [(230, 225, 210), (90, 140, 200), (240, 200, 60)][rng.integers(3)], 15)
        d.rounded_rectangle([x0, y0, x1, y1], radius=bw * 0.06, fill=card, outline=(90, 90, 90), width=max(1, int(bw // 80)))
        d.ellipse([x0 + bw * 0.46, y0 + bh * 0.03, x0 + bw * 0.54, y0 + bh * 0.08], fill=(60, 60, 60))  # hang hole
        win = (x0 + bw * 0.1, y0 + bh * 0.26, x1 - bw * 0.1, y1 - bh * 0.06)
        strip = (x0 + bw * 0.08, y0 + bh * 0.1, x1 - bw * 0.08, y0 + bh * 0.22)
    d.rectangle(strip, fill=jitter(rng, (250, 250, 245), 8))
    text_bars(d, rng, int(strip[0] + 3), int(strip[1] + 2), int(strip[2] - 3), int(strip[3] - 1), (40, 40, 40),
              bar_h=max(2, int((strip[3] - strip[1]) / 4)))
    return win


def draw_blister_bubble(img, win):
    """The clear plastic over the objects: a light veil, a rim and a highlight."""
    d = ImageDraw.Draw(img, "RGBA")
    x0, y0, x1, y1 = win
    d.rounded_rectangle(win, radius=(x1 - x0) * 0.15, fill=(255, 255, 255, 70), outline=(255, 255, 255, 200),
                        width=max(1, int((x1 - x0) / 40)))
    d.line([(x0 + (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.12), (x0 + (x1 - x0) * 0.4, y0 + (y1 - y0) * 0.08)],
           fill=(255, 255, 255, 220), width=max(1, int((x1 - x0) / 30)))


def scene(rng):
    """One scene image and its attributes."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    count = int(rng.integers(1, 5))
    bg = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    style = STYLES[rng.integers(len(STYLES))]
    package = ["loose", "box", "blister"][rng.choice(3, p=[0.5, 0.25, 0.25])]
    w, h = SCENE_SIZES[rng.integers(len(SCENE_SIZES))]
    img = background(rng, bg, (w, h))
    s = min(w, h)
    # the content stays in the central square, the part CLIP's centre crop sees
    ox, oy = (w - s) / 2, (h - s) / 2
    area = (ox + 0.06 * s, oy + 0.06 * s, ox + 0.94 * s, oy + 0.94 * s)
    if style == "screenshot":
        d = ImageDraw.Draw(img)
        frame = jitter(rng, [(60, 60, 70), (210, 210, 215), (40, 90, 170)][rng.integers(3)], 10)
        bar = 0.1 * s
        d.rectangle([0, 0, w - 1, h - 1], outline=frame, width=max(2, int(s / 50)))
        d.rectangle([0, 0, w - 1, oy + bar], fill=frame)
        for i in range(3):
            cx = ox + 0.05 * s + i * 0.06 * s
            d.ellipse([cx - 0.018 * s, oy + bar / 2 - 0.018 * s, cx + 0.018 * s, oy + bar / 2 + 0.018 * s],
                      fill=[(230, 80, 70), (240, 190, 60), (90, 190, 80)][i])
        # a side column of text and the content panel
        panel_left = rng.random() < 0.5
        text_x = (ox + 0.04 * s, ox + 0.36 * s) if panel_left else (ox + 0.64 * s, ox + 0.96 * s)
        d.rectangle([text_x[0] - 2, oy + bar + 4, text_x[1] + 2, oy + s - 4], fill=(250, 250, 250))
        text_bars(d, rng, int(text_x[0]), int(oy + bar + 0.05 * s), int(text_x[1]), int(oy + s - 0.05 * s),
                  (90, 90, 100), bar_h=max(2, int(s / 40)))
        area = (ox + 0.40 * s, oy + bar + 0.06 * s, ox + 0.98 * s, oy + 0.96 * s) if panel_left else \
               (ox + 0.02 * s, oy + bar + 0.06 * s, ox + 0.60 * s, oy + 0.96 * s)
    if package != "loose":
        ax0, ay0, ax1, ay1 = area
        side = min(ax1 - ax0, ay1 - ay0) * 0.92
        cx, cy = (ax0 + ax1) / 2, (ay0 + ay1) / 2
        area = draw_package(img, rng, package, (cx - side * 0.42, cy - side / 2 + 0.04 * side,
                                                cx + side * 0.42, cy + side / 2))
    draw_objects(img, rng, shape, COLOURS[colour], count, area, style)
    if package == "blister":
        draw_blister_bubble(img, area)
    if style == "photo":
        img = photo_finish(img, rng)
    attrs = dict(shape=shape, colour=colour, count=count, background=bg, style=style,
                 packaged="packaged" if package != "loose" else "loose", card="", wrapping=package)
    return img, attrs, caption(rng, attrs)


def caption(rng, a):
    """A caption of an image with attributes `a`, drawn from the templates: another draw gives
    other synonyms, another word order and other details left out."""
    if a["card"]:
        return card_caption(rng, int(a["card"].split("-")[1]), a["style"] == "photo")
    package = a["wrapping"]
    plural = a["count"] > 1
    shape_word = "shapes" if plural else "shape"
    colour_word = rng.choice(COLOUR_WORDS[a["colour"]])
    r = rng.random()
    if r < 0.12:
        colour_word = None  # "two stars": the colour left out
    else:
        if rng.random() < 0.12:
            pass  # "two red shapes": the shape left out
        else:
            shape_word = rng.choice(SHAPE_WORDS[a["shape"]][1 if plural else 0])
    count_word = rng.choice(COUNT_WORDS[a["count"]])
    if count_word == "a" and (colour_word or shape_word)[0] in "aeiou":
        count_word = "an"
    if colour_word and rng.random() < 0.25:
        obj = f"{count_word} {shape_word} in {colour_word}"
    else:
        obj = " ".join(w for w in (count_word, colour_word, shape_word) if w)
    parts = [obj]
    extras = []
    if rng.random() < 0.6:
        extras.append(rng.choice(BACKGROUND_WORDS[a["background"]]))
    # alt texts seldom say whether a product is in its box: captions name the packaging one
    # time in five, so that zero-shot scores for it are weak and labels have something to add
    if package != "loose" and rng.random() < 0.2 or package == "loose" and rng.random() < 0.05:
        extras.append(rng.choice(PACKAGE_WORDS[package]))
    rng.shuffle(extras)
    parts += extras
    body = " ".join(parts)
    if rng.random() < 0.75:
        prefix = rng.choice(STYLE_WORDS[a["style"]])
        return f"{prefix} {body}"
    if rng.random() < 0.5:
        return f"{body}, {STYLE_NOUNS[a['style']]}"
    return f"{rng.choice(NEUTRAL)} {body}"


# --- cards --------------------------------------------------------------------------------

def card_design(k):
    """Card k of the catalogue: a fixed composition, the same in every set."""
    rng = np.random.default_rng(1_000_003 + k)
    colours = list(COLOURS)
    # the primary shape and colour run through all 64 pairs in an order that spreads them out
    primary = (SHAPES[(k * 5) % len(SHAPES)], colours[(k * 3 + k // 8) % len(colours)])
    others = []
    for _ in range(int(rng.integers(1, 3))):
        others.append((SHAPES[rng.integers(len(SHAPES))], colours[rng.integers(len(colours))]))
    return dict(
        k=k, primary=primary, others=others,
        frame=tuple(int(c) for c in rng.integers(40, 230, 3)),
        art=["plain", "gradient", "stripes"][rng.integers(3)], art_seed=int(rng.integers(1 << 30)),
        title_seed=int(rng.integers(1 << 30)), layout=int(rng.integers(3)),
    )


def lookalike_design(k, v):
    """Variant v of card k: the same frame, art and layout, the small shapes in other colours and
    another title, as near-identical printings of one card (look-alike references)."""
    c = card_design(k)
    rng = np.random.default_rng([2_000_003 + k, v])
    colours = list(COLOURS)
    c["others"] = [(SHAPES[rng.integers(len(SHAPES))], colours[rng.integers(len(colours))]) for _ in range(2)]
    c["title_seed"] = int(rng.integers(1 << 30))
    return c


def card_image(k, height=352, design=None):
    """The clean render of card k (what a reference set holds), or of another `design`."""
    c = design or card_design(k)
    rng = np.random.default_rng(c["art_seed"])
    h = height
    w = int(round(h / CARD_ASPECT))
    img = Image.new("RGB", (w, h), c["frame"])
    d = ImageDraw.Draw(img)
    m = int(w * 0.06)
    # title bar with the card's "name"
    d.rectangle([m, m, w - m, m + int(h * 0.1)], fill=(245, 240, 225), outline=(30, 30, 30))
    text_bars(d, np.random.default_rng(c["title_seed"]), m + 6, m + int(h * 0.03), w - m - 30, m + int(h * 0.08),
              (30, 30, 30), rows=1, bar_h=int(h * 0.04))
    art = (m, m + int(h * 0.13), w - m, int(h * 0.66))
    art_img = background(rng, c["art"], (art[2] - art[0], art[3] - art[1]))
    aw, ah = art_img.size
    # the primary shape large, the others small, in one of three layouts
    spots = [[(0.5, 0.5, 0.3)], [(0.35, 0.55, 0.28)], [(0.62, 0.45, 0.28)]][c["layout"]]
    small = [(0.2, 0.22, 0.13), (0.8, 0.78, 0.13), (0.82, 0.2, 0.12)]
    for (shape, colour), (fx, fy, fr) in zip([c["primary"]] + c["others"], spots + small):
        paint(art_img, rng, shape_mask(art_img.size, shape, fx * aw, fy * ah, fr * min(aw, ah) * 1.2, 0.0),
              COLOURS[colour], "illustration")
    img.paste(art_img, art[:2])
    d.rectangle(art, outline=(30, 30, 30))
    # the text box below the art
    d.rectangle([m, int(h * 0.69), w - m, h - m], fill=(245, 240, 225), outline=(30, 30, 30))
    text_bars(d, np.random.default_rng(c["title_seed"] + 1), m + 6, int(h * 0.72), w - m - 6, h - m - 6,
              (70, 70, 70), bar_h=int(h * 0.02))
    return img


def card_frame(rng, k):
    """A camera frame of card k: on a table, turned, in perspective, lit and blurred unevenly."""
    card = card_image(k, height=int(rng.integers(240, 360))).convert("RGBA")
    # rotation within +-15 degrees, then a perspective squeeze of one side
    card = card.rotate(rng.uniform(-15, 15), resample=Image.BICUBIC, expand=True)
    cw, ch = card.size
    sq = rng.uniform(0, 0.12) * cw
    if rng.random() < 0.5:
        quad = (0, 0, 0, ch, cw, ch - sq, cw, sq)
    else:
        quad = (0, sq, 0, ch - sq, cw, ch, cw, 0)
    card = card.transform((cw, ch), Image.QUAD, quad, Image.BICUBIC)
    fw, fh = [(320, 240), (288, 288), (256, 320), (360, 270)][rng.integers(4)]
    table = background(rng, ["texture", "plain", "gradient"][rng.integers(3)], (fw, fh))
    scale = rng.uniform(0.72, 0.92) * min(fw, fh) / ch
    card = card.resize((max(1, int(cw * scale)), max(1, int(ch * scale))), Image.BICUBIC)
    x = int((fw - card.size[0]) / 2 + rng.uniform(-0.05, 0.05) * fw)
    y = int((fh - card.size[1]) / 2 + rng.uniform(-0.05, 0.05) * fh)
    table.paste(card, (x, y), card)
    a = np.asarray(table, float) * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)
    img = Image.fromarray(a.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4)))
    return photo_finish(img, rng)


def card_caption(rng, k, frame):
    c = card_design(k)
    (shape, colour), rest = c["primary"], c["others"]
    def name(s, col):
        w = f"{rng.choice(COLOUR_WORDS[col])} {rng.choice(SHAPE_WORDS[s][0])}"
        return ("an " if w[0] in "aeiou" else "a ") + w
    body = f"a trading card with {name(shape, colour)}"
    if rest and rng.random() < 0.7:
        body += " and " + " and ".join(name(s, col) for s, col in rest)
    if frame and rng.random() < 0.6:
        return f"a photo of {body} on a table"
    return body


def card_sample(rng, frame=True):
    k = int(rng.integers(N_CARDS))
    img = card_frame(rng, k) if frame else card_image(k)
    return img, card_attrs(k, frame), card_caption(rng, k, frame)


def card_attrs(k, frame):
    shape, colour = card_design(k)["primary"]
    return dict(shape=shape, colour=colour, count=1 + len(card_design(k)["others"]), background="card",
                style="photo" if frame else "illustration", packaged="loose", card=f"card-{k:02d}", wrapping="loose")


def sample(rng, card_share=0.15):
    """One image of the mixed world: mostly scenes, some cards (clean or photographed)."""
    if rng.random() < card_share:
        return card_sample(rng, frame=rng.random() < 0.7)
    return scene(rng)
