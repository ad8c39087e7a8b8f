"""Predictions from an exported model with onnxruntime: what `graft serve` and `graft score` run.

A Predictor reads a model folder written by export (model.onnx, preprocess.json, tokenizer/,
vocabulary.json) - a registry version's onnx/ or export's output folder - and turns raw inputs
(PIL images or strings) into labels, confidences, embeddings and the input summary features
the production log keeps. Preprocessing is the model's own: timm's eval transform for images,
the saved tokenizer for text, as in training and export, without torch (model/inference.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.core.errors import ModelNotFound
from pipeline.model.inference import TextEncoder, eval_image_transform, softmax
from pipeline.model.quantize import int8_path
from pipeline.production.profile import image_features, text_features
from pipeline.production.runtime import ort_session


@dataclass(frozen=True)
class Predictions:
    labels: list[str]
    confidence: np.ndarray  # (n,)
    probs: np.ndarray  # (n, classes)
    embedding: np.ndarray  # (n, dim) float32
    features: list[dict[str, float]]


class Predictor:
    def __init__(self, model_dir: str | Path, version: str = "", variant: str = "fp32"):
        self.dir = Path(model_dir)
        onnx = int8_path(self.dir, version) if variant == "int8" else self.dir / "model.onnx"
        if not onnx.exists() or not (self.dir / "preprocess.json").exists():
            raise ModelNotFound(f"{onnx} (with preprocess.json beside it) does not exist; "
                                "run `graft export` or `graft run` first")
        meta = json.loads((self.dir / "preprocess.json").read_text(encoding="utf-8"))
        self.version = version or self.dir.name
        self.labels: list[str] = meta["labels"]
        self.modality: str = meta["modality"]
        self.model_name: str = meta.get("model", "")
        self.preprocess: dict[str, Any] = meta["preprocess"]
        self.session, self.provider = ort_session(onnx)
        vocab_path = self.dir / "vocabulary.json"
        self.vocab = frozenset(json.loads(vocab_path.read_text(encoding="utf-8"))) if vocab_path.exists() else frozenset()
        if self.modality == "image":
            self._transform = eval_image_transform(self.preprocess)
        else:
            self._encode = TextEncoder(self.dir / "tokenizer", int(self.preprocess["max_length"]))

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = self.session.run(["logits", "embedding"], feeds)
        return logits, emb.astype(np.float32)

    def image_input(self, image: Image.Image) -> tuple[np.ndarray, dict[str, float]]:
        """One image as the model's input tensor and its summary features: the decoded image can
        be dropped at once, so a request holds one full-size image at a time."""
        return self._transform(image.convert("RGB")), image_features(image)

    def predict_image_inputs(self, inputs: list[tuple[np.ndarray, dict[str, float]]]) -> Predictions:
        x = np.stack([t for t, _ in inputs])
        return self._finish(*self._run({"input": x}), [f for _, f in inputs])

    def predict_images(self, images: list[Image.Image]) -> Predictions:
        return self.predict_image_inputs([self.image_input(im) for im in images])

    def predict_texts(self, texts: list[str]) -> Predictions:
        feats = [text_features(t, self.vocab) for t in texts]
        return self._finish(*self._run(self._encode(texts)), feats)

    def predict(self, inputs: list[Any]) -> Predictions:
        return self.predict_images(inputs) if self.modality == "image" else self.predict_texts(inputs)

    def _finish(self, logits: np.ndarray, emb: np.ndarray, feats: list[dict[str, float]]) -> Predictions:
        probs = softmax(logits.astype(np.float64))
        top = probs.argmax(1)
        return Predictions([self.labels[i] for i in top], probs.max(1), probs, emb, feats)

    def records(self, preds: Predictions, sources: list[str] | None = None,
                inputs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Production-log rows for these predictions (timestamped by the log); `inputs` adds, per row,
        what identifies the input (input_sha256, and the text itself for a text model)."""
        out = []
        for i, label in enumerate(preds.labels):
            row: dict[str, Any] = {"model_version": self.version, "source": sources[i] if sources else "",
                                   **(inputs[i] if inputs else {}), **preds.features[i], "pred": label,
                                   "confidence": float(preds.confidence[i]),
                                   "probs": preds.probs[i].astype(np.float32), "embedding": preds.embedding[i]}
            out.append(row)
        return out


def text_inputs(texts: list[str], keep: bool = True) -> list[dict[str, Any]]:
    """Per text: its content hash (sha256 of the UTF-8 bytes: what prepare and ingest compute, so
    labels that arrive later match), and the text itself when `keep` (the label queue shows it)."""
    return [{"input_sha256": hashlib.sha256(t.encode("utf-8", "surrogateescape")).hexdigest(),
             **({"text": t} if keep else {})} for t in texts]
