"""Fixtures that build small datasets on disk: image class folders and text tables."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

# Quiet and offline, as the CLI sets it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def solid_image(path: Path, size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0,
                fmt: str | None = None) -> Path:
    """A small image whose pixels depend on `seed`, so every seed hashes differently."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (seed % 256, (seed * 7) % 256, (seed * 13) % 256), "L": seed % 256,
              "CMYK": (seed % 256, 10, 20, 30), "I;16": seed * 97 % 65536}.get(mode, seed % 256)
    img = Image.new(mode, size, colour)
    img.putpixel((0, 0), (255, 255, 255) if mode == "RGB" else img.getpixel((0, 0)))
    img.save(path, format=fmt)
    return path


@pytest.fixture
def image_tree(tmp_path: Path) -> Callable[..., Path]:
    """image_tree(classes={'cat': 10, 'dog': 10}) -> root with root/<class>/<i>.png."""

    def make(classes: dict[str, int] | None = None, root: Path | None = None, start: int = 0) -> Path:
        root = root or tmp_path / "images"
        seed = start
        for label, n in (classes or {"cat": 12, "dog": 12}).items():
            (root / label).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                seed += 1
                solid_image(root / label / f"{label}_{seed:05d}.png", seed=seed)
        return root

    return make


@pytest.fixture
def text_csv(tmp_path: Path) -> Callable[..., Path]:
    """text_csv(rows=[(text, label), ...]) -> a CSV with a header text,label."""

    def make(rows: list[tuple[str, str]] | None = None, name: str = "data.csv") -> Path:
        import csv

        rows = rows if rows is not None else [(f"message number {i} about {lbl}", lbl)
                                              for lbl in ("ham", "spam") for i in range(20)]
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        return path

    return make


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height but holds no pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path
