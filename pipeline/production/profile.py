"""Input summary features of images and text: what production inputs look like, in a few numbers
each (audio's are in pipeline/modalities/audio_io.py; each modality names its own).

Images: width, height, brightness, contrast, sharpness, colourfulness. Text: length, word
count, share of out-of-vocabulary words, share of non-ASCII characters. The same functions
profile the training data at export (the drift reference) and every served or scored input,
so reference and production are measured identically.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
from PIL import Image

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_SIDE = 128  # images are measured on a thumbnail of at most this side: cheap, and size-independent


def image_features(im: Image.Image) -> dict[str, float]:
    """Size, brightness (mean luma), contrast (luma std), sharpness (variance of the Laplacian),
    colourfulness (Hasler and Suesstrunk, 2003); all on a 0-255 scale."""
    width, height = im.size
    small = im.convert("RGB")
    small.thumbnail((_SIDE, _SIDE))
    rgb = np.asarray(small, dtype=np.float32)
    luma = np.asarray(small.convert("L"), dtype=np.float32)
    lap = (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
           if min(luma.shape) > 2 else np.zeros(1, dtype=np.float32))
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return {"width": float(width), "height": float(height), "brightness": float(luma.mean()),
            "contrast": float(luma.std()), "sharpness": float(lap.var()), "colourfulness": colourful}


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def vocabulary(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """The words of the training texts: what the model has seen."""
    counts = Counter(w for t in texts for w in words(t))
    return sorted(w for w, c in counts.items() if c >= min_count)


def text_features(text: str, vocab: frozenset[str] | set[str]) -> dict[str, float]:
    ws = words(text)
    oov = sum(w not in vocab for w in ws) / len(ws) if ws else 0.0
    non_ascii = sum(ord(c) > 127 for c in text) / len(text) if text else 0.0
    return {"length": float(len(text)), "word_count": float(len(text.split())), "oov_share": float(oov),
            "non_ascii_share": float(non_ascii)}
