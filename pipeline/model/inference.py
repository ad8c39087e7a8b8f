"""What running an exported model needs, without torch: `pip install graft[serve]` serves with this.

- `eval_image_transform`: timm's eval transform (`timm.data.create_transform(..., is_training=False)`)
  from a model's data config, in PIL and numpy: the same PIL resize, crop arithmetic and float32
  normalisation, so the arrays equal timm's (tests/code/test_inference.py compares them).
- `TextEncoder`: the saved fast tokenizer (tokenizer/tokenizer.json) through the `tokenizers`
  library, padded and truncated as the transformers tokenizer is in training (compared there too).
- `softmax`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.core.errors import ModelNotFound

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
DEFAULT_CROP_PCT = 0.875  # timm's


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _resize(image: Image.Image, height: int, width: int, resample: Image.Resampling) -> Image.Image:
    return image if image.size == (width, height) else image.resize((width, height), resample)


def _shortest_edge(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return _resize(image, new_h, new_w, resample)


def _keep_ratio(image: Image.Image, size: tuple[int, int], longest: float, resample: Image.Resampling) -> Image.Image:
    w, h = image.size
    rh, rw = h / size[0], w / size[1]
    ratio = max(rh, rw) * longest + min(rh, rw) * (1.0 - longest)
    return _resize(image, round(h / ratio), round(w / ratio), resample)


def _center_crop(image: Image.Image, size: tuple[int, int], fill: tuple[int, ...]) -> Image.Image:
    ch, cw = size
    w, h = image.size
    if cw > w or ch > h:  # pad to the crop first, as torchvision and timm do
        left, top = max(cw - w, 0) // 2, max(ch - h, 0) // 2
        padded = Image.new(image.mode, (max(w, cw), max(h, ch)), fill)
        padded.paste(image, (left, top))
        image, (w, h) = padded, padded.size
        if (w, h) == (cw, ch):
            return image
    top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
    return image.crop((left, top, left + cw, top + ch))


def eval_image_transform(preprocess: dict[str, Any]) -> Callable[[Image.Image], np.ndarray]:
    """An RGB PIL image -> the model's float32 (3, H, W) input, as timm's eval transform makes it."""
    size = preprocess.get("input_size", (3, 224, 224))
    img_size = (int(size[-2]), int(size[-1]))
    crop_pct = float(preprocess.get("crop_pct") or DEFAULT_CROP_PCT)
    crop_mode = preprocess.get("crop_mode") or "center"
    interpolation = preprocess.get("interpolation", "bilinear")
    if interpolation not in _RESAMPLE:
        raise ModelNotFound(f"preprocess.json: interpolation {interpolation!r} is not one of {sorted(_RESAMPLE)}; "
                            "re-export the model with `graft export`")
    resample = _RESAMPLE[interpolation]
    scale = (math.floor(img_size[0] / crop_pct), math.floor(img_size[1] / crop_pct))
    mean = np.asarray(preprocess.get("mean", (0.485, 0.456, 0.406)), dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(preprocess.get("std", (0.229, 0.224, 0.225)), dtype=np.float32).reshape(3, 1, 1)

    def transform(image: Image.Image) -> np.ndarray:
        fill: tuple[int, ...] = (0, 0, 0)
        if crop_mode == "squash":
            image = _resize(image, scale[0], scale[1], resample)
        elif crop_mode == "border":
            image = _keep_ratio(image, scale, 1.0, resample)
            fill = tuple(round(255 * float(v)) for v in mean.ravel())
        elif scale[0] == scale[1]:
            image = _shortest_edge(image, scale[0], resample)
        else:
            image = _keep_ratio(image, scale, 0.0, resample)
        image = _center_crop(image, img_size, fill)
        x = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return (x - mean) / std

    return transform


class TextEncoder:
    """The saved tokenizer: texts -> int64 input_ids and attention_mask, padded to the batch's longest
    and truncated at max_length, as training's `tokenizer(texts, padding=True, truncation=True)`."""

    def __init__(self, folder: Path, max_length: int):
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.exists():
            raise ModelNotFound(f"{path} does not exist: the exported model has no fast tokenizer; "
                                "re-export it with `graft export`")
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        self._tok = Tokenizer.from_file(str(path))
        self._tok.enable_truncation(max_length, direction=config.get("truncation_side", "right"))
        pad = config.get("pad_token") or "[PAD]"
        pad = pad["content"] if isinstance(pad, dict) else pad
        pad_id = self._tok.token_to_id(pad)
        self._tok.enable_padding(direction=config.get("padding_side", "right"), pad_id=pad_id or 0, pad_token=pad,
                                 pad_type_id=int(config.get("pad_token_type_id", 0)))

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self._tok.encode_batch(texts)
        return {"input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64)}
