"""Demo datasets generated deterministically, so the demo needs no download.

images: coloured circles, squares and triangles on noisy backgrounds (class folders, PNG).
text: short customer-support messages about billing, delivery and login problems (CSV).
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from pipeline.core.io import write_text_atomic

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


# Production after a shift: the same three intents, in the words of a new product line and a
# new customer base (vocabulary the training data never used, some of it not ASCII).
_SHIFTED_TOPICS = {
    "billing": (
        ["Mi factura de", "Crypto wallet top-up for", "The instalment plan on", "Klarna split for",
         "Gutschrift fehlt für", "Reembolso pendiente de", "Wire transfer fee on", "Prorated credit for"],
        ["the solar panel lease", "mi suscripción anual", "the e-bike rental", "die Jahresgebühr",
         "the NFT marketplace pass", "the café loyalty tier", "el plan familiar", "the co-working desk"],
        ["shows a double débito.", "was deducted twice, ¿por qué?", "needs a rectified invoice.",
         "has the wrong IBAN.", "was never credited back.", "charged in euros, not dollars.",
         "still says überfällig.", "is 12 € too high."],
    ),
    "delivery": (
        ["The drone drop-off of", "Mi pedido de", "Locker pickup for", "Das Paket mit",
         "Same-day courier with", "Cargo bike delivery of", "El envío de", "Click-and-collect for"],
        ["the espresso machine", "los auriculares", "the kayak paddles", "dem Gaming-Monitor",
         "the sourdough starter kit", "the vinyl records", "la bicicleta plegable", "the aquarium pump"],
        ["is stuck in customs.", "llegó roto.", "went to the neighbour's locker.", "ist verschwunden.",
         "shows delivered but isn't here.", "needs a new time slot.", "was returned to sender.",
         "lleva dos semanas de retraso."],
    ),
    "login": (
        ["The passkey for", "Mi contraseña de", "Face ID unlock of", "Das Konto bei",
         "The SSO redirect for", "Biometric sign-on to", "El código SMS para", "Magic link login to"],
        ["the smartwatch companion app", "la banca móvil", "the smart-home hub", "der Steuer-Software",
         "the Okta workspace", "the VR headset portal", "mi perfil de empresa", "the kiosk terminal"],
        ["no funciona desde ayer.", "loops back to the start.", "ist gesperrt.",
         "rejects my authenticator.", "expired before it arrived.", "says token invalid.",
         "pide verificación otra vez.", "fails after the firmware update."],
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
    return _write_rows(path, rows)


def _write_rows(path: str | Path, rows: list[tuple[str, str]]) -> Path:
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


def shift_image(img: Image.Image, rng: random.Random) -> Image.Image:
    """A production shift: a brighter, blurred, rotated camera."""
    img = img.rotate(rng.uniform(20, 40), resample=Image.BILINEAR, fillcolor=img.getpixel((0, 0)))
    img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.5, 2.5)))
    return ImageEnhance.Brightness(img).enhance(rng.uniform(1.6, 2.0))


def text_rows(per_class: int, seed: int, shifted: bool = False) -> list[tuple[str, str]]:
    topics = _SHIFTED_TOPICS if shifted else _TOPICS
    rows = []
    for label, (starts, objects, ends) in topics.items():
        rng = random.Random(f"{seed}:{label}:{shifted}")
        rows += [(f"{rng.choice(starts)} {rng.choice(objects)}, {rng.choice(ends)}", label) for _ in range(per_class)]
    random.Random(seed).shuffle(rows)
    return rows


def make_text_batch(path: str | Path, per_class: int, seed: int, shifted: bool = False) -> Path:
    """New labelled `text,label` rows (repeats allowed, as in real traffic)."""
    return _write_rows(path, text_rows(per_class, seed, shifted))
