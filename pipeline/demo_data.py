"""Demo datasets generated deterministically, so the demo needs no download.

images: coloured circles, squares and triangles on noisy backgrounds (class folders, PNG).
text: short customer-support messages about billing, delivery and login problems (CSV).
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from pipeline.io import write_text_atomic

SHAPES = ("circle", "square", "triangle")

_TOPICS = {
    "billing": (
        ["I was charged twice for", "Why is there an extra fee on", "Please refund", "My invoice for",
         "The payment for", "I need a receipt for", "You billed my card for", "Cancel the charge for"],
        ["my subscription", "last month", "order 4471", "the annual plan", "my account",
         "the premium upgrade", "this invoice", "the renewal"],
        ["it looks wrong.", "can you check the amount?", "I want my money back.", "the price changed.",
         "it was already paid.", "please fix the billing.", "the VAT is wrong.", "thanks."],
    ),
    "delivery": (
        ["My parcel for", "The package with", "Where is the shipment of", "The courier lost",
         "Tracking shows nothing for", "The box containing", "I am still waiting for", "Delivery of"],
        ["my new shoes", "order 9120", "the blue lamp", "two books", "the replacement part",
         "my groceries", "the desk chair", "the gift"],
        ["has not arrived.", "arrived damaged.", "went to the wrong address.", "is three days late.",
         "was left outside in the rain.", "is stuck at the depot.", "never showed up.", "came empty."],
    ),
    "login": (
        ["I cannot log in to", "The password reset for", "Two-factor codes for", "I am locked out of",
         "The app keeps signing me out of", "My username for", "The verification email for",
         "Sign-in fails on"],
        ["my account", "the mobile app", "the website", "my work profile", "the dashboard",
         "my old email", "the family plan", "the desktop client"],
        ["since yesterday.", "and the link has expired.", "after the update.", "with an unknown error.",
         "even with the right password.", "every time I try.", "please help me get back in.",
         "on every browser."],
    ),
}


def _shape_image(shape: str, rng: random.Random, size: int) -> Image.Image:
    bg = tuple(rng.randint(0, 90) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(size // 4):  # background clutter so the task is not trivial
        x, y = rng.randrange(size), rng.randrange(size)
        draw.point((x, y), fill=tuple(rng.randint(0, 140) for _ in range(3)))
    fg = tuple(rng.randint(130, 255) for _ in range(3))
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fg)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.8)))


def make_image_demo(root: str | Path, per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Write `per_class` PNGs for each shape under root/<shape>/; returns root."""
    root = Path(root)
    for shape in SHAPES:
        rng = random.Random(f"{seed}:{shape}")
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _shape_image(shape, rng, size).save(folder / f"{shape}_{i:04d}.png", optimize=False)
    return root


def make_text_demo(path: str | Path, per_class: int = 80, seed: int = 0) -> Path:
    """Write a CSV of `text,label` rows, `per_class` distinct messages per topic."""
    rows: list[tuple[str, str]] = []
    for label, (starts, objects, ends) in _TOPICS.items():
        rng = random.Random(f"{seed}:{label}")
        seen: set[str] = set()
        while len(seen) < per_class:
            seen.add(f"{rng.choice(starts)} {rng.choice(objects)}, {rng.choice(ends)}")
        rows += [(text, label) for text in sorted(seen)]
    random.Random(seed).shuffle(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def make_demo_data(raw_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Both demo datasets under raw_dir: images/ and tickets.csv."""
    raw = Path(raw_dir)
    return {"image": make_image_demo(raw / "images", seed=seed),
            "text": make_text_demo(raw / "tickets.csv", seed=seed)}
