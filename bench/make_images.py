"""Generate N JPEG images in class folders for timing prepare + validate (deterministic)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image


def make(root: Path, n: int, classes: int = 10, size: int = 128, offset: int = 0) -> None:
    """Images offset .. offset+n-1 (each a distinct file; parallel callers take disjoint ranges)."""
    rng = random.Random(offset)
    base = Image.effect_noise((size, size), 60).convert("RGB")
    for i in range(offset, offset + n):
        folder = root / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        img = base.copy()
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (0, 0, size // 4, size // 4))
        img.save(folder / f"{i:07d}.jpg", quality=90)


if __name__ == "__main__":
    make(Path(sys.argv[1]), int(sys.argv[2]))
