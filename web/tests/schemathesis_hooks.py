"""Schemathesis hooks for pg_clip web's API fuzzing: an identify request's body is a real image
(a generated photo or card frame), the same image cut short, or what Schemathesis generated,
each a third of the time. PG_CLIP_WEB_IMAGES names the folder of images."""

import os
import random

import schemathesis

FOLDER = os.environ["PG_CLIP_WEB_IMAGES"]
IMAGES = [open(os.path.join(FOLDER, f), "rb").read()
          for f in sorted(os.listdir(FOLDER)) if f.endswith((".jpg", ".png"))][:24]


@schemathesis.hook
def map_body(ctx, body):
    if not ctx.operation.path.startswith("/api/v1/identify"):
        return body
    pick = random.random()
    image = random.choice(IMAGES)
    if pick < 1 / 3:
        image = image[: random.randrange(1, len(image))]
    elif pick >= 2 / 3:
        return body
    if ctx.operation.path.endswith("/batch"):
        return {"image": [image, image]} if isinstance(body, dict) else body
    return image
