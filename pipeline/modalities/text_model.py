"""The torch side of text: transformers encoders with mean pooling, the tokenizing collate, the
exported module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.model.backbone import (
    Backbone,
    Classifier,
    TwoOutputs,
    UnsupportedCandidate,
    WeightsNotFound,
    display_name,
    hint,
    offline,
)

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class TextEncoder(nn.Module):
    """A transformers encoder with mean pooling over real tokens (as sentence-transformers do)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)



class TextRows(Dataset):
    def __init__(self, texts: list[str], targets: list[int]):
        self.texts, self.targets = texts, targets

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], self.targets[i]


def text_collate(tokenizer: Any, max_length: int) -> Callable[[list[tuple[str, int]]], Batch]:
    def collate(batch: list[tuple[str, int]]) -> Batch:
        texts, ys = zip(*batch, strict=True)
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return (enc["input_ids"], enc["attention_mask"]), torch.tensor(ys)

    return collate


class TextIO(TwoOutputs):
    """The classifier as exported: token ids and mask -> (logits, embedding)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(input_ids, attention_mask)


def rebuild_text(folder: Path, dim: int, num_classes: int) -> tuple[Classifier, Any]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder / "encoder"))
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return Classifier(TextEncoder(encoder), dim, num_classes), tokenizer


def load_transformer(name: str, weights: str | Path | None, max_length: int = 128,
                     pretrained: bool = True) -> Backbone:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    where = str(weights) if weights is not None else name
    if isinstance(weights, Path) and not weights.is_dir():
        raise UnsupportedCandidate(f"{weights}: a transformers model is a folder (save_pretrained "
                                   "output: config.json, model.safetensors, tokenizer files)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=offline() or weights is not None)
        local = offline() or weights is not None
        if pretrained:
            encoder = AutoModel.from_pretrained(where, local_files_only=local, use_safetensors=None)
        else:  # the architecture and tokenizer of the source, random weights
            torch.manual_seed(0)
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(where, local_files_only=local))
    except OSError as exc:
        if weights is None:
            raise WeightsNotFound(f"Hugging Face model '{name}' is not in the local cache"
                                  f"{' and HF_HUB_OFFLINE is set' if offline() else ''} ({exc.__class__.__name__}); "
                                  f"{hint(name)}") from None
        raise WeightsNotFound(f"cannot load '{name}' from {weights}: {exc}") from None
    encoder.eval()
    dim = int(encoder.config.hidden_size)
    return Backbone(display_name(name, pretrained), "text", TextEncoder(encoder), dim,
                    where if pretrained else "random initialisation",
                    {"max_length": max_length, "pooling": "mean"}, tokenizer=tokenizer,
                    build={"library": "transformers"})
