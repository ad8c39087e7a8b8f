"""Predictions from an exported model with onnxruntime: what `graft serve` and `graft score` run.

A Predictor reads a model folder written by export (model.onnx, preprocess.json, and what the
modality's codec reads: tokenizer/, vocabulary.json) - a registry version's onnx/ or export's
output folder - and turns raw inputs (file bytes for images and audio, strings for text) into
labels, confidences, embeddings and the input summary features the production log keeps.
Preprocessing is the model's own, through the modality's codec, without torch: timm's eval
transform for images, the saved tokenizer for text, the log-mel features for audio.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelNotFound
from pipeline.core.params import ServeParams
from pipeline.modalities.registry import get_modality
from pipeline.model.inference import softmax
from pipeline.model.quantize import int8_path
from pipeline.production.runtime import ort_session


@dataclass(frozen=True)
class Predictions:
    labels: list[str]
    confidence: np.ndarray  # (n,)
    probs: np.ndarray  # (n, classes)
    embedding: np.ndarray  # (n, dim) float32
    features: list[dict[str, float]]


class Predictor:
    def __init__(self, model_dir: str | Path, version: str = "", variant: str = "fp32", **limits: Any):
        """`limits`: serve's max_pixels and max_audio_seconds (their defaults unless given)."""
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
        self.kind = get_modality(self.modality)
        self.codec = self.kind.codec(self.dir, self.preprocess, **{**ServeParams().input_limits(), **limits})
        self.session, self.provider = ort_session(onnx)

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = self.session.run(["logits", "embedding"], feeds)
        return logits, emb.astype(np.float32)

    def read(self, raw: Any, where: str) -> tuple[Any, dict[str, float]]:
        """One raw input (file bytes or a text) -> (model input, summary features); InputRejected
        names `where` when it is not one. The raw input can be dropped at once."""
        return self.codec.read(raw, where)

    def predict_inputs(self, inputs: list[tuple[Any, dict[str, float]]]) -> Predictions:
        """Predictions for `read` outputs."""
        return self._finish(*self._run(self.codec.feeds([x for x, _ in inputs])), [f for _, f in inputs])

    def predict(self, raws: list[Any]) -> Predictions:
        return self.predict_inputs([self.read(r, f"input {i}") for i, r in enumerate(raws)])

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
