"""Images: class folders of image files, timm backbones, timm's transforms, pixel tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.core.inputs import open_image
from pipeline.modalities.base import Codec, Modality
from pipeline.modalities.folders import decode_files, scan_files

if TYPE_CHECKING:
    from pipeline.core.params import DataParams, PrepareParams, ValidateParams

_MODE_NOTES = {"CMYK": " (print colours)", "I;16": " (16-bit)", "I;16B": " (16-bit)", "I": " (32-bit integer)",
               "F": " (32-bit float)"}


def image_transform(preprocess: dict[str, Any], train: bool, augment: bool = True) -> Callable[[Any], Any]:
    """timm's transform from a model's own data config: training (augmented) or eval."""
    from timm.data import create_transform

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in preprocess.items()}
    return create_transform(**cfg, is_training=train and augment)


class ImageCodec(Codec):
    def __init__(self, preprocess: dict[str, Any], max_pixels: int = 0):
        from pipeline.model.inference import eval_image_transform

        self._transform, self.max_pixels = eval_image_transform(preprocess), max_pixels

    def read(self, raw: Any, where: str) -> tuple[np.ndarray, dict[str, float]]:
        """Bytes (or a decoded PIL image) -> the pixel tensor; the decoded image is dropped at once,
        so a request holds one full-size image at a time."""
        from pipeline.production.profile import image_features

        image = raw if hasattr(raw, "convert") else open_image(raw, where, self.max_pixels)
        return self._transform(image.convert("RGB")), image_features(image)

    def feeds(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"input": np.stack(inputs)}


class ImageModality(Modality):
    name = "image"
    noun = "images"
    extensions = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
    feature_names = ("width", "height", "brightness", "contrast", "sharpness", "colourfulness")
    derived_slices = ("size_bucket",)
    media_folder = "images"
    default_candidates = ({"name": "convnext_nano.in12k_ft_in1k"}, {"name": "efficientnet_b0.ra_in1k"})
    weights_note = ("timm models; their ImageNet weights come from the Hugging Face hub: run `HF_HUB_OFFLINE=0 "
                    "graft run` once (graft is offline by default), then they are in the cache. Or add weights: "
                    "a .safetensors file or a timm model folder")
    labelstudio_tag = "Image"
    static_int8 = True
    flip_tta = True
    upload_hint = "upload them as multipart/form-data field 'files' (curl -F files=@cat.jpg)"

    def file_extensions(self, prepare: PrepareParams) -> tuple[str, ...]:
        return tuple(prepare.image_extensions)

    def scan(self, path: Path, data: DataParams, prepare: PrepareParams
             ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        from pipeline.data.image_files import image_facts

        return scan_files(self, path, prepare, image_facts, "hashing images")

    def row_expectations(self, v: ValidateParams, gxe: Any) -> list[tuple[Any, Callable[[Any], str]]]:
        im = v.image
        size = (f"validate.image allows {im.min_width}..{im.max_width} x "
                f"{im.min_height}..{im.max_height} pixels: resize it or change validate.image")
        return [
            (gxe.ExpectColumnValuesToBeNull(column="decode_error"), lambda r: r["decode_error"]),
            (gxe.ExpectColumnValuesToBeBetween(column="width", min_value=im.min_width, max_value=im.max_width),
             lambda r: f"image is {r['width']}x{r['height']}; {size}"),
            (gxe.ExpectColumnValuesToBeBetween(column="height", min_value=im.min_height, max_value=im.max_height),
             lambda r: f"image is {r['width']}x{r['height']}; {size}"),
            (gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=im.modes),
             lambda r: (f"image mode {r['mode']}{_MODE_NOTES.get(r['mode'] or '', '')} is not in "
                        f"validate.image.modes {im.modes}: convert it to RGB (PIL: Image.convert('RGB')) "
                        "or allow the mode")),
        ]

    def decode_errors(self, frame: pd.DataFrame, root: str, v: ValidateParams, workers: int,
                      meanwhile: Callable[[], Any] | None = None) -> pd.Series:
        from pipeline.data.image_files import decode_check

        return decode_files(frame, root, decode_check, v.image.thumbnail, workers, "decoding images", meanwhile)

    def derived_slice(self, frame: pd.DataFrame, column: str) -> pd.Series:
        if column != "size_bucket":
            raise KeyError(column)
        area = frame["width"].astype(float) * frame["height"].astype(float)
        return pd.cut(area, [0, 64**2, 256**2, np.inf], labels=["small", "medium", "large"]).astype(str)

    # ------------------------------------------------------------ model
    def load_backbone(self, name: str, weights: Any, max_length: int, pretrained: bool,
                      manifest: pd.DataFrame | None = None) -> Any:
        from pipeline.modalities.image_model import load_timm

        return load_timm(name, weights, pretrained)

    def rebuild(self, folder: Path, info: dict[str, Any], num_classes: int) -> tuple[Any, Any]:
        import timm

        from pipeline.model.backbone import Classifier

        b = info["build"]
        module = timm.create_model(b["architecture"], pretrained=False, num_classes=0, **b["model_args"])
        return Classifier(module, info["dim"], num_classes, flip_tta=info.get("tta") == "hflip"), None

    def dataset(self, backbone: Any, frame: pd.DataFrame, targets: list[int], root: Path, *,
                train: bool, augment: bool) -> tuple[Any, Callable[[list[Any]], Any]]:
        from pipeline.modalities.image_model import ImageRows, collate_images

        transform = image_transform(backbone.preprocess, train, augment)
        return ImageRows(frame["path"].tolist(), targets, root, transform), collate_images

    def perturbations(self) -> dict[str, Callable[[Any], Any]]:
        from PIL import ImageEnhance, ImageOps

        return {"horizontal_flip": ImageOps.mirror,
                "brightness_+10%": lambda im: ImageEnhance.Brightness(im).enhance(1.1)}

    def perturbed(self, backbone: Any, frame: pd.DataFrame, root: Path, op: Callable[[Any], Any]) -> Any:
        from pipeline.modalities.image_model import ImageRows

        transform = image_transform(backbone.preprocess, train=False)
        return ImageRows(frame["path"].tolist(), [0] * len(frame), root, lambda im: transform(op(im)))

    def input_names(self) -> list[str]:
        return ["input"]

    def export_module(self, clf: Any) -> tuple[Any, dict[str, Any]]:
        import torch

        from pipeline.modalities.image_model import ImageIO

        return ImageIO(clf).eval(), {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}

    # ------------------------------------------------------------ serving
    def codec(self, model_dir: Path, preprocess: dict[str, Any], max_pixels: int = 0, **_: Any) -> ImageCodec:
        return ImageCodec(preprocess, max_pixels)

    def reference_inputs(self, chunk: pd.DataFrame, root: Path) -> list[Any]:
        return [open_image(root / rel, rel) for rel in chunk["path"]]

