"""One reading of a raw input, the same in prepare, train, evaluate, export, serve and score.

Images: the pixel count is checked from the header before anything is decoded (a 137 KB PNG
can declare 144 million pixels), PIL's decompression-bomb guard is an error, and the EXIF
orientation is applied, so a photo taken sideways is trained on and served the way it is seen.
Texts: a string (never another type turned into one), encodable as UTF-8 (a lone surrogate is
not text), and not blank: whitespace of any script (NBSP, em space, ideographic space...) and
invisible format characters (zero-width space, BOM) count as nothing.
"""

from __future__ import annotations

import io
import unicodedata
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from pipeline.core.errors import GraftError

INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")


class InputRejected(GraftError):
    """One input (an image, a text) that cannot be classified; the message names it and why."""


class TooLarge(InputRejected):
    """An image whose declared size is over the pixel limit (a server answers 413, not 422)."""


_UNSEEN = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"})  # spaces, controls, format, unassigned


def is_blank(text: str) -> bool:
    """No visible character: only whitespace of any script, control characters (NUL...), invisible
    format characters (zero-width space, BOM) or unassigned code points."""
    return all(c in INVISIBLE or unicodedata.category(c) in _UNSEEN for c in text)


def kind(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", list: "list", dict: "object", str: "string",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_text(value: Any, where: str) -> str:
    """The text itself, or InputRejected naming `where` and what is wrong."""
    if not isinstance(value, str):
        raise InputRejected(f"{where} is a {kind(value)}, not a string; send the text as a JSON string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputRejected(f"{where} holds {value[exc.start]!r} at character {exc.start}, a lone surrogate "
                            "that no UTF-8 text contains; send valid Unicode") from None
    if is_blank(value):
        raise InputRejected(f"{where} has no visible character (empty, whitespace or control characters only); "
                            "send the text to classify")
    return value


def _verify(source: bytes | Path) -> None:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as probe:
        probe.verify()


def open_image(source: bytes | Path, where: str, max_pixels: int = 0) -> Image.Image:
    """Decode an image upright (EXIF orientation applied) as RGB, after checking its declared
    size against `max_pixels` (0 = PIL's own bomb limit only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the sizes are checked below
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise TooLarge(f"{where} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                                    "(serve.max_pixels); downscale it")
            if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{w}x{h} pixels, over PIL's limit of {Image.MAX_IMAGE_PIXELS:,}")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                _verify(source)  # what validate quarantines (a broken CRC, a truncated file) is refused here too
                im.load()
                upright = ImageOps.exif_transpose(im)
                return upright.convert("RGB")
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRejected(f"{where}: refused as a decompression bomb ({exc}); downscale it") from None
    except Exception as exc:  # a malformed file surfaces as many exception types
        raise InputRejected(f"{where}: not a readable image ({type(exc).__name__}: {exc}); "
                            "send PNG, JPEG, WebP, ...") from None
