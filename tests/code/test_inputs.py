"""The one input check: what validate quarantines, serve and score refuse too."""

import io
import zlib

import pytest
from PIL import Image

from pipeline.core.inputs import InputRejected, check_text, is_blank, open_image
from pipeline.data.image_files import decode_check


@pytest.mark.parametrize("text", ["", " ", "\x00\x00", "\x00\x01\x7f", "\u200b\ufeff", "\u00a0\u3000", "\ue000"])
def test_a_text_with_no_visible_character_is_blank(text):
    assert is_blank(text)
    with pytest.raises(InputRejected, match="no visible character"):
        check_text(text, "text")


@pytest.mark.parametrize("text", ["a", "\x00a", "日本", "🙂", " 1 "])
def test_a_visible_character_makes_a_text(text):
    assert not is_blank(text) and check_text(text, "text") == text


def test_a_png_with_a_broken_crc_is_refused_by_serving_as_by_validate(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT")
    length = int.from_bytes(data[start - 4:start], "big")
    crc_at = start + 4 + length
    assert int.from_bytes(data[crc_at:crc_at + 4], "big") == zlib.crc32(data[start:crc_at])
    data[crc_at] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(data))
    assert decode_check((str(tmp_path), "bad.png", 16)) is not None  # validate quarantines it
    with pytest.raises(InputRejected, match=r"bad\.png"):
        open_image(bytes(data), "bad.png")
    with pytest.raises(InputRejected):
        open_image(tmp_path / "bad.png", "bad.png")
    assert open_image(buf.getvalue(), "good.png").size == (32, 32)
