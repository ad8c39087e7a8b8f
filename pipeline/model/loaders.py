"""Datasets and loaders over the validated manifest, with the model's own preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pipeline.core.inputs import open_image
from pipeline.model.backbones import Backbone

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class ImageRows(Dataset):
    def __init__(self, paths: list[str], targets: list[int], root: Path, transform: Callable[[Any], Any]):
        self.paths, self.targets, self.root, self.transform = paths, targets, root, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_image(self.root / self.paths[i], self.paths[i])), self.targets[i]


class TextRows(Dataset):
    def __init__(self, texts: list[str], targets: list[int]):
        self.texts, self.targets = texts, targets

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], self.targets[i]


def image_transform(preprocess: dict[str, Any], train: bool, augment: bool = True) -> Callable[[Any], Any]:
    """timm's transform from a model's own data config: training (augmented) or eval."""
    from timm.data import create_transform

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in preprocess.items()}
    return create_transform(**cfg, is_training=train and augment)


def _collate_images(batch: list[tuple[torch.Tensor, int]]) -> Batch:
    xs, ys = zip(*batch, strict=True)
    return (torch.stack(xs),), torch.tensor(ys)


def _text_collate(tokenizer: Any, max_length: int) -> Callable[[list[tuple[str, int]]], Batch]:
    def collate(batch: list[tuple[str, int]]) -> Batch:
        texts, ys = zip(*batch, strict=True)
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return (enc["input_ids"], enc["attention_mask"]), torch.tensor(ys)

    return collate


def make_loader(backbone: Backbone, frame: pd.DataFrame, targets: list[int], root: Path, *,
                batch_size: int, train: bool = False, augment: bool = True,
                generator: torch.Generator | None = None, shard: tuple[int, int] | None = None,
                seed: int = 0, workers: int = 0, drop_last: bool = False,
                pin_memory: bool = False) -> DataLoader:
    """A loader of (inputs tuple, targets); shuffled with `generator` when train; pin_memory for
    batches bound for a GPU (page-locked, so the copy can overlap the compute).

    shard=(world, rank): this process's part of every epoch (a DistributedSampler seeded with
    `seed`; call loader.sampler.set_epoch(epoch))."""
    if backbone.modality == "image":
        ds: Dataset = ImageRows(frame["path"].tolist(), targets, root, image_transform(backbone.preprocess, train, augment))
        collate = _collate_images
    else:
        ds = TextRows(frame["text"].tolist(), targets)
        collate = _text_collate(backbone.tokenizer, int(backbone.preprocess["max_length"]))
    sampler: Sampler | None = None
    if shard is not None:
        sampler = DistributedSampler(ds, num_replicas=shard[0], rank=shard[1], shuffle=train, seed=seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      generator=generator, collate_fn=collate, num_workers=workers, drop_last=drop_last,
                      persistent_workers=False, pin_memory=pin_memory)
