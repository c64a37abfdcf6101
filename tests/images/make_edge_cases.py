#!/usr/bin/env python3
"""Derive the edge-case image files in tests/images/edge/ from the committed photos.

Deterministic (fixed sizes and qualities), needs only Pillow. Re-run after changing
the list; the outputs are committed so that tests need no Python.
"""
import os
import struct
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = os.path.join(HERE, "photos")
OUT = os.path.join(HERE, "edge")


def photo(name):
    return Image.open(os.path.join(PHOTOS, name))


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(path, side):
    """A valid 1-bit PNG of side x side pixels, all black: tiny on disk, huge once decoded."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))


def grey_png(path, w, h):
    """A valid 8-bit grey PNG of w x h black pixels, compressed row by row (tiny on disk)."""
    row = b"\x00" + b"\x00" * w
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))


def extreme_aspect_ratios():
    """One line of pixels in every accepted format, as long as the format allows (or 20 M for
    PNG, under the default pixel limit): resized to 224 on the short side, each would need
    gigabytes to terabytes."""
    grey_png(os.path.join(OUT, "tall.png"), 1, 20_000_000)
    grey_png(os.path.join(OUT, "wide.png"), 20_000_000, 1)
    Image.new("L", (1, 65500)).save(os.path.join(OUT, "tall.jpg"), quality=50)
    Image.new("L", (16383, 1)).save(os.path.join(OUT, "wide.webp"), lossless=True)
    Image.new("P", (1, 65535)).save(os.path.join(OUT, "tall.gif"))
    Image.new("1", (65535, 1)).save(os.path.join(OUT, "wide.bmp"))
    Image.new("L", (1, 1_000_000)).save(os.path.join(OUT, "tall.tiff"), compression="tiff_deflate")


def main():
    os.makedirs(OUT, exist_ok=True)
    cat = photo("chelsea.png").convert("RGB")
    coffee = photo("coffee.png").convert("RGB")

    # EXIF orientation 6 (rotate 90 CW to display): stored sideways, as phones do
    exif = Image.Exif()
    exif[0x0112] = 6
    cat.transpose(Image.Transpose.ROTATE_90).save(os.path.join(OUT, "exif_rotate90.jpg"), quality=92, exif=exif)
    cat.save(os.path.join(OUT, "cat.webp"), quality=90)
    small_cat = cat.resize((300, 200), Image.Resampling.BICUBIC)  # uncompressed formats: keep the repo small
    small_cat.save(os.path.join(OUT, "cat.bmp"))
    small_cat.save(os.path.join(OUT, "cat.tiff"))
    cat.convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=92)
    cat.convert("L").save(os.path.join(OUT, "grey.jpg"), quality=92)
    cat.quantize(64).save(os.path.join(OUT, "palette.png"))
    cat.quantize(64).save(os.path.join(OUT, "cat.gif"))
    rgba = coffee.resize((300, 200), Image.Resampling.BICUBIC).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(os.path.join(OUT, "alpha.png"))
    # 16-bit RGB PNG: Pillow cannot write one, so build it with raw rows
    w, h = 96, 64
    small = coffee.resize((w, h), Image.Resampling.BICUBIC)
    rows = b"".join(b"\x00" + b"".join(struct.pack(">HHH", *(v * 257 for v in small.getpixel((x, y))))
                                       for x in range(w)) for y in range(h))
    with open(os.path.join(OUT, "rgb16.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + png_chunk(b"IDAT", zlib.compress(rows, 9)) + png_chunk(b"IEND", b""))
    Image.new("RGB", (1, 1), (200, 30, 60)).save(os.path.join(OUT, "one_pixel.png"))
    coffee.resize((6000, 300), Image.Resampling.BICUBIC).save(os.path.join(OUT, "panorama.jpg"), quality=85)
    # broken or unsupported inputs
    with open(os.path.join(PHOTOS, "rocket.jpg"), "rb") as f:
        data = f.read()
    with open(os.path.join(OUT, "truncated.jpg"), "wb") as f:
        f.write(data[: len(data) // 3])
    with open(os.path.join(OUT, "random.bin"), "wb") as f:
        f.write(bytes((i * 7919 + 13) % 251 for i in range(4096)))
    small_cat.save(os.path.join(OUT, "cat.ppm"))  # a real image in a format pg_clip does not accept
    bomb_png(os.path.join(OUT, "bomb.png"), 20000)
    extreme_aspect_ratios()
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
