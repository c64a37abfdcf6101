"""A Y4M video (YUV 4:2:0, BT.601) of one still image, for Chromium's fake camera
(--use-file-for-fake-video-capture): python3 make_video.py IMAGE OUT.y4m [SECONDS]."""

import sys

import numpy as np
from PIL import Image


def main(src: str, out: str, seconds: float = 4.0) -> None:
    rgb = Image.open(src).convert("RGB")
    w, h = rgb.size
    rgb = rgb.resize((w - w % 2, h - h % 2))
    a = np.asarray(rgb, dtype=np.float32)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    sub = lambda p: p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))  # noqa: E731
    planes = [np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in (y, sub(u), sub(v))]
    fps = 10
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{rgb.width} H{rgb.height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(int(seconds * fps)):
            f.write(b"FRAME\n")
            for p in planes:
                f.write(p)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(float(x) for x in sys.argv[3:4]))
