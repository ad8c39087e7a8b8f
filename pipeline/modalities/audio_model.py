"""The torch side of audio: speech encoders from transformers (Whisper's encoder; wav2vec 2.0,
HuBERT and other raw-waveform encoders through AutoModel), pooled over the frames that hold
audio; the dataset with its augmentation; the exported module.

Whisper pads every input to 30 s. Here the encoder runs on a window fitted to the data (its
position table cut to the window: the positions are absolute, so the first N are the same
ones a 30 s input uses), and the mean pools only the frames that hold the clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.modalities.audio_io import filters_for, model_input, read_audio, resample
from pipeline.model.backbone import (
    Backbone,
    Classifier,
    TwoOutputs,
    UnsupportedCandidate,
    WeightsNotFound,
    display_name,
    hint,
    offline,
    transformer_groups,
)

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class AudioEncoder(nn.Module):
    """features (or samples) + 0/1 mask -> the mean of the encoder's frames that hold audio."""

    def __init__(self, encoder: nn.Module, log_mel: bool, pass_mask: bool = False):
        super().__init__()
        self.encoder, self.log_mel, self.pass_mask = encoder, log_mel, pass_mask

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.log_mel:  # Whisper: two convolutions, the second of stride 2
            hidden = self.encoder(features).last_hidden_state
            frames = mask[:, ::2][:, : hidden.shape[1]]
        else:
            hidden = self.encoder(features, attention_mask=mask.long() if self.pass_mask else None).last_hidden_state
            lengths = self.encoder._get_feat_extract_output_lengths(mask.sum(-1).long())
            frames = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]).to(hidden.dtype)
        frames = frames.to(hidden.dtype).unsqueeze(-1)
        return (hidden * frames).sum(1) / frames.sum(1).clamp(min=1.0)


def audio_groups(module: nn.Module) -> list[list[str]]:
    """transformer_groups with the convolutional front end (wav2vec2's feature encoder, Whisper's
    conv1/conv2) as the bottom group, below layer 0, instead of joining the top one."""
    groups = transformer_groups(module)
    front = [n for g in groups for n in g if ".conv" in n or "feature_" in n or "masked_spec" in n]
    rest = [[n for n in g if n not in front] for g in groups]
    return [g for g in [front, *rest] if g]


def _cut_positions(encoder: nn.Module, positions: int) -> None:
    """Keep the first `positions` rows of Whisper's position table (the window's)."""
    table = encoder.embed_positions
    if positions >= table.num_embeddings:
        return
    cut = nn.Embedding(positions, table.embedding_dim)
    cut.weight = nn.Parameter(table.weight.detach()[:positions].clone(), requires_grad=table.weight.requires_grad)
    encoder.embed_positions = cut
    encoder.config.max_source_positions = positions
    if hasattr(encoder, "max_source_positions"):
        encoder.max_source_positions = positions


def _whisper_encoder(config: Any, where: str | None, local: bool) -> nn.Module:
    from transformers import WhisperForAudioClassification

    if where is None:
        torch.manual_seed(0)  # the same "scratch" network in select and train
        return WhisperForAudioClassification(config).encoder
    return WhisperForAudioClassification.from_pretrained(where, local_files_only=local, dtype=torch.float32).encoder


def load_audio_encoder(name: str, weights: str | Path | None, window_seconds: float,
                       pretrained: bool = True) -> Backbone:
    """A speech encoder by hub name or local folder, with its feature extractor's settings."""
    import transformers
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    where = str(weights) if weights is not None else name
    if isinstance(weights, Path) and not weights.is_dir():
        raise UnsupportedCandidate(f"{weights}: a transformers model is a folder (save_pretrained output: "
                                   "config.json, model.safetensors, preprocessor_config.json)")
    local = offline() or weights is not None
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the unused decoder weights are expected, not news
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=local)
        extractor = AutoFeatureExtractor.from_pretrained(where, local_files_only=local)
        log_mel = config.model_type == "whisper"
        if log_mel:
            encoder = _whisper_encoder(config, where if pretrained else None, local)
        elif pretrained:
            encoder = AutoModel.from_pretrained(where, local_files_only=local, dtype=torch.float32)
        else:
            torch.manual_seed(0)
            encoder = AutoModel.from_config(config)
    except OSError as exc:
        if weights is None:
            raise WeightsNotFound(f"Hugging Face model '{name}' is not in the local cache"
                                  f"{' and HF_HUB_OFFLINE is set' if offline() else ''} ({type(exc).__name__}); "
                                  f"{hint(name)}") from None
        raise WeightsNotFound(f"cannot load '{name}' from {weights}: {exc}") from None
    finally:
        transformers.logging.set_verbosity(level)
    if not hasattr(encoder, "_get_feat_extract_output_lengths") and not log_mel:
        raise UnsupportedCandidate(f"'{name}' ({config.model_type}) is not a speech encoder graft knows: use "
                                   "Whisper, wav2vec 2.0, HuBERT, WavLM or another model with a CNN feature encoder")
    rate = int(extractor.sampling_rate)
    samples = round(window_seconds * rate)
    pre: dict[str, Any] = {"sampling_rate": rate, "window_seconds": window_seconds, "pooling": "mean over audio"}
    if log_mel:
        hop = int(extractor.hop_length)
        samples = -(-samples // (2 * hop)) * 2 * hop  # whole encoder positions
        _cut_positions(encoder, samples // hop // 2)
        pre.update(features="log_mel", n_fft=int(extractor.n_fft), hop_length=hop,
                   n_mels=int(extractor.feature_size))
    else:
        pre.update(features="waveform", normalize=bool(getattr(extractor, "do_normalize", True)),
                   attention_mask=bool(getattr(extractor, "return_attention_mask", False)))
    pre["window_samples"] = samples
    encoder.eval()
    module = AudioEncoder(encoder, log_mel, pre.get("attention_mask", False))
    return Backbone(display_name(name, pretrained), "audio", module, int(config.hidden_size if not log_mel
                                                                          else config.d_model),
                    where if pretrained else "random initialisation", pre, build={"library": "transformers"},
                    grouper=audio_groups)


def rebuild_audio(folder: Path, info: dict[str, Any], num_classes: int) -> Classifier:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder / "encoder")
    pre = info["preprocess"]
    if pre["features"] == "log_mel":
        encoder = _whisper_encoder(config, None, True)
        module = AudioEncoder(encoder, True)
    else:
        module = AudioEncoder(AutoModel.from_config(config), False, pre.get("attention_mask", False))
    return Classifier(module, info["dim"], num_classes)


class AudioRows(Dataset):
    """Clips -> (features, mask). Training augmentation: a random offset into clips longer than the
    window, a time shift (silence before the clip), gain, noise mixing and, for log-mel
    features, one time and one frequency mask (SpecAugment)."""

    def __init__(self, paths: list[str], targets: list[int], root: Path, preprocess: dict[str, Any],
                 augment: bool = False, op: Any = None):
        self.paths, self.targets, self.root, self.pre, self.augment, self.op = paths, targets, root, preprocess, augment, op
        self.mel = filters_for(preprocess)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        wave, rate = read_audio(self.root / self.paths[i], self.paths[i])
        wave = resample(wave, rate, int(self.pre["sampling_rate"]))
        if self.op is not None:
            wave = self.op(wave)
        offset = 0
        if self.augment:
            wave, offset = _augment(wave, int(self.pre["window_samples"]), np.random.default_rng(
                int(torch.randint(2**31 - 1, ()).item())))
        feats, mask = model_input(wave, self.pre, self.mel, offset)
        if self.augment and self.pre["features"] == "log_mel":
            feats = _spec_mask(feats, int(mask.sum()), np.random.default_rng(int(torch.randint(2**31 - 1, ()).item())))
        return (torch.from_numpy(feats), torch.from_numpy(mask)), self.targets[i]


def _augment(wave: np.ndarray, window: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    offset = int(rng.integers(0, len(wave) - window + 1)) if len(wave) > window else 0
    room = window - min(len(wave), window)
    if room > 0:  # shift the clip later in its window, by up to a tenth of the window
        wave = np.concatenate([np.zeros(int(rng.integers(0, min(room, window // 10) + 1)), np.float32), wave])
    wave = wave * np.float32(10 ** (rng.uniform(-6, 6) / 20))
    if rng.random() < 0.5:  # white noise 15-40 dB below the clip
        power = float((wave**2).mean()) + 1e-10
        wave = wave + rng.normal(0, np.sqrt(power / 10 ** (rng.uniform(15, 40) / 10)), len(wave)).astype(np.float32)
    return np.clip(wave, -1, 1).astype(np.float32), offset


def _spec_mask(feats: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    feats = feats.copy()
    low = feats.min()
    width = int(rng.integers(0, max(1, frames // 10) + 1))
    start = int(rng.integers(0, max(1, frames - width)))
    feats[:, start:start + width] = low
    band = int(rng.integers(0, feats.shape[0] // 10 + 1))
    f0 = int(rng.integers(0, feats.shape[0] - band + 1))
    feats[f0:f0 + band, :] = low
    return feats


def collate_audio(batch: list[tuple[tuple[torch.Tensor, torch.Tensor], int]]) -> Batch:
    inputs, ys = zip(*batch, strict=True)
    return (torch.stack([f for f, _ in inputs]), torch.stack([m for _, m in inputs])), torch.tensor(ys)


class AudioIO(TwoOutputs):
    """The classifier as exported: features and mask -> (logits, embedding)."""

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(features, attention_mask)

