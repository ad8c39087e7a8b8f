"""Input summary features move the way the shift they describe does."""

import random

from PIL import Image, ImageFilter

from pipeline.data.demo import _shape_image, shift_image
from pipeline.production.profile import image_features, text_features, vocabulary


def test_brightness_blur_and_colour_are_measured():
    img = _shape_image("circle", random.Random(0), 64)
    base = image_features(img)
    assert base["width"] == 64 and base["height"] == 64
    assert image_features(img.point(lambda v: min(255, v * 2)))["brightness"] > base["brightness"] * 1.5
    assert image_features(img.filter(ImageFilter.GaussianBlur(3)))["sharpness"] < base["sharpness"] / 3
    assert image_features(img.convert("L").convert("RGB"))["colourfulness"] < 1.0 < base["colourfulness"]
    shifted = image_features(shift_image(img, random.Random(1)))
    assert shifted["brightness"] > base["brightness"] and shifted["sharpness"] < base["sharpness"]
    flat = Image.new("RGB", (300, 100), (128, 128, 128))
    f = image_features(flat)
    assert (f["width"], f["height"], f["contrast"], f["sharpness"]) == (300, 100, 0.0, 0.0)


def test_text_features_count_unknown_words_and_non_ascii():
    vocab = set(vocabulary(["Free prize now", "see you later"]))
    assert vocab == {"free", "prize", "now", "see", "you", "later"}
    f = text_features("FREE prize, mañana!", vocab)
    assert f == {"length": 19.0, "word_count": 3.0, "oov_share": 1 / 3, "non_ascii_share": 1 / 19}
    assert text_features("", vocab) == {"length": 0.0, "word_count": 0.0, "oov_share": 0.0, "non_ascii_share": 0.0}
