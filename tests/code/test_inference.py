"""Serving's torch-free preprocessing makes the arrays training's libraries make."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import TEXT_WORDS
from PIL import Image

from pipeline.core.errors import ModelNotFound
from pipeline.modalities.image import image_transform
from pipeline.model.inference import TextEncoder, eval_image_transform, softmax

CONFIGS = [
    {"input_size": [3, 224, 224], "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "crop_mode": "center"},
    {"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0},
    {"input_size": [3, 48, 64], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3,
     "crop_pct": 0.9, "crop_mode": "center"},  # non-square: timm's keep-ratio resize
    {"input_size": [3, 40, 40], "interpolation": "bicubic", "mean": [0.4] * 3, "std": [0.3] * 3,
     "crop_pct": 0.95, "crop_mode": "squash"},
    {"input_size": [3, 40, 40], "interpolation": "lanczos", "mean": [0.4, 0.5, 0.6], "std": [0.3] * 3,
     "crop_pct": 1.0, "crop_mode": "border"},
]
SIZES = [(300, 200), (64, 512), (37, 41), (10, 12), (256, 256)]


def _image(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['input_size'][1]}x{c['input_size'][2]}-"
                         f"{c.get('crop_mode', 'center')}-{c['interpolation']}")
def test_image_transform_equals_timms_eval_transform(config):
    ours, timms = eval_image_transform(config), image_transform(config, train=False)
    for seed, size in enumerate(SIZES):
        image = _image(size, seed)
        a, b = ours(image), timms(image).numpy()
        assert a.dtype == np.float32 and a.shape == b.shape == (3, *config["input_size"][1:]), (size, a.shape, b.shape)
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"image {size}")


def test_unknown_interpolation_is_refused_naming_the_file():
    with pytest.raises(ModelNotFound, match=r"preprocess.json: interpolation 'cubic'"):
        eval_image_transform({**CONFIGS[0], "interpolation": "cubic"})


def test_text_encoder_equals_the_transformers_tokenizer(tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tiny_bert_dir)).save_pretrained(tmp_path)  # as export saves it
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = [" ".join(w) for w in itertools.islice(itertools.permutations(TEXT_WORDS[:6], 3), 5)]
    texts += [" ".join(TEXT_WORDS * 3), "zzz unknown words", "", "ÉTÉ Über ß"]
    for max_length in (8, 64):
        ours = TextEncoder(tmp_path, max_length)(texts)
        want = ref(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        np.testing.assert_array_equal(ours["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(ours["attention_mask"], want["attention_mask"])
        assert ours["input_ids"].dtype == np.int64 and ours["input_ids"].shape[1] <= max_length


def test_text_encoder_without_a_fast_tokenizer_names_the_fix(tmp_path):
    with pytest.raises(ModelNotFound, match=r"tokenizer.json does not exist.*graft export"):
        TextEncoder(tmp_path, 16)


def test_softmax_is_stable_and_sums_to_one():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0, 0] == pytest.approx(1.0) and p[1, 0] == pytest.approx(1 / 3)
