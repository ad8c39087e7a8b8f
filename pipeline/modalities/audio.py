"""Audio: class folders of wav/flac/ogg/mp3 clips, speech encoders from transformers (Whisper,
wav2vec 2.0, HuBERT), features computed in numpy (audio_io) and fed to the exported graph."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.modalities.audio_io import (
    EXTENSIONS,
    audio_features,
    filters_for,
    model_input,
    read_audio,
    resample,
)
from pipeline.modalities.base import Codec, Modality
from pipeline.modalities.folders import decode_files, scan_files

if TYPE_CHECKING:
    from pipeline.core.params import DataParams, PrepareParams, ValidateParams

MAX_WINDOW_SECONDS = 30.0  # Whisper's own window; longer clips are cut to it


def window_seconds(manifest: pd.DataFrame | None) -> float:
    """The encoder's window: the 99th percentile of the training clips' durations, rounded up to
    half a second, between 1 s and 30 s. A 1 s keyword costs 1 s of encoder compute, not 30 s;
    the rare longer clip is cut (a random part of it in training)."""
    if manifest is None or "seconds" not in manifest:
        return MAX_WINDOW_SECONDS
    train = manifest.loc[manifest["split"] == "train", "seconds"].dropna().astype(float)
    durations = train if len(train) else manifest["seconds"].dropna().astype(float)
    if durations.empty:
        return MAX_WINDOW_SECONDS
    return float(min(MAX_WINDOW_SECONDS, max(1.0, math.ceil(np.percentile(durations, 99) * 2) / 2)))


class AudioCodec(Codec):
    def __init__(self, preprocess: dict[str, Any], max_seconds: float = 0.0):
        self.pre, self.max_seconds = preprocess, max_seconds
        self.filters = filters_for(preprocess)

    def read(self, raw: Any, where: str) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, float]]:
        wave, rate = read_audio(raw, where, self.max_seconds)
        features = audio_features(wave, rate)
        return model_input(resample(wave, rate, int(self.pre["sampling_rate"])), self.pre, self.filters), features

    def feeds(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        return {"input_features": np.stack([f for f, _ in inputs]), "attention_mask": np.stack([m for _, m in inputs])}


class AudioModality(Modality):
    name = "audio"
    noun = "audio clips"
    extensions = EXTENSIONS
    feature_names = ("duration", "loudness", "silence_share", "spectral_centroid", "sample_rate")
    derived_slices = ("duration_bucket",)
    media_folder = "audio"
    lora = True
    default_candidates = ({"name": "openai/whisper-base"}, {"name": "openai/whisper-tiny"})
    weights_note = ("Whisper encoders (multilingual); their weights come from the Hugging Face hub: run "
                    "`HF_HUB_OFFLINE=0 graft run` once (graft is offline by default), then they are in the cache. "
                    "Or add weights: a transformers model folder (Whisper, wav2vec 2.0, HuBERT)")
    labelstudio_tag = "Audio"
    upload_hint = "upload them as multipart/form-data field 'files' (curl -F files=@clip.wav)"

    def scan(self, path: Path, data: DataParams, prepare: PrepareParams
             ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        from pipeline.modalities.audio_io import audio_facts

        return scan_files(self, path, prepare, audio_facts, "hashing audio")

    def row_expectations(self, v: ValidateParams, gxe: Any) -> list[tuple[Any, Callable[[Any], str]]]:
        a = v.audio
        return [
            (gxe.ExpectColumnValuesToBeNull(column="decode_error"), lambda r: r["decode_error"]),
            (gxe.ExpectColumnValuesToBeBetween(column="seconds", min_value=a.min_seconds, max_value=a.max_seconds),
             lambda r: (f"clip is {r['seconds']:.2f} s long; validate.audio allows {a.min_seconds:g}..{a.max_seconds:g} s: "
                        "cut it, or change validate.audio")),
            (gxe.ExpectColumnValuesToBeBetween(column="sample_rate", min_value=a.min_sample_rate),
             lambda r: (f"sample rate {r['sample_rate']} Hz is below validate.audio.min_sample_rate="
                        f"{a.min_sample_rate}: a telephone-band or lower recording; allow it by lowering the limit")),
            (gxe.ExpectColumnValuesToBeBetween(column="channels", min_value=1, max_value=a.max_channels),
             lambda r: (f"{r['channels']} channels, above validate.audio.max_channels={a.max_channels}: "
                        "mix it down to mono or stereo")),
        ]

    def decode_errors(self, frame: pd.DataFrame, root: str, v: ValidateParams, workers: int,
                      meanwhile: Callable[[], Any] | None = None) -> pd.Series:
        from pipeline.modalities.audio_io import audio_check

        limits = {"max_seconds": v.audio.max_seconds, "max_clipping_share": v.audio.max_clipping_share,
                  "max_silence_share": v.audio.max_silence_share}
        return decode_files(frame, root, audio_check, limits, workers, "decoding audio", meanwhile)

    def derived_slice(self, frame: pd.DataFrame, column: str) -> pd.Series:
        if column != "duration_bucket":
            raise KeyError(column)
        return pd.cut(frame["seconds"].astype(float), [-1, 1, 5, np.inf],
                      labels=["under 1 s", "1-5 s", "over 5 s"]).astype(str)

    # ------------------------------------------------------------ model
    def load_backbone(self, name: str, weights: Any, max_length: int, pretrained: bool,
                      manifest: pd.DataFrame | None = None) -> Any:
        from pipeline.modalities.audio_model import load_audio_encoder

        return load_audio_encoder(name, weights, window_seconds(manifest), pretrained)

    def save_backbone(self, backbone: Any, folder: Path) -> None:
        backbone.module.encoder.config.save_pretrained(folder / "encoder")

    def rebuild(self, folder: Path, info: dict[str, Any], num_classes: int) -> tuple[Any, Any]:
        from pipeline.modalities.audio_model import rebuild_audio

        return rebuild_audio(folder, info, num_classes), None

    def dataset(self, backbone: Any, frame: pd.DataFrame, targets: list[int], root: Path, *,
                train: bool, augment: bool) -> tuple[Any, Callable[[list[Any]], Any]]:
        from pipeline.modalities.audio_model import AudioRows, collate_audio

        return AudioRows(frame["path"].tolist(), targets, root, backbone.preprocess, train and augment), collate_audio

    def perturbations(self) -> dict[str, Callable[[Any], Any]]:
        return {"gain_-6dB": lambda w: w * np.float32(0.5),
                "delay_100ms": lambda w: np.concatenate([np.zeros(1600, np.float32), w])}

    def perturbed(self, backbone: Any, frame: pd.DataFrame, root: Path, op: Callable[[Any], Any]) -> Any:
        from pipeline.modalities.audio_model import AudioRows

        return AudioRows(frame["path"].tolist(), [0] * len(frame), root, backbone.preprocess, op=op)

    def input_names(self) -> list[str]:
        return ["input_features", "attention_mask"]

    def export_module(self, clf: Any) -> tuple[Any, dict[str, Any]]:
        import torch

        from pipeline.modalities.audio_model import AudioIO

        batch = torch.export.Dim("batch", min=1, max=4096)
        return AudioIO(clf).eval(), {"features": {0: batch}, "attention_mask": {0: batch}}

    # ------------------------------------------------------------ serving
    def codec(self, model_dir: Path, preprocess: dict[str, Any], max_audio_seconds: float = 0.0,
              **_: Any) -> AudioCodec:
        return AudioCodec(preprocess, max_audio_seconds)
