"""Loaders over the validated manifest, with the model's own preprocessing: the modality gives
the dataset and its collate (pipeline/modalities)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from pipeline.modalities.registry import get_modality
from pipeline.model.backbone import Backbone


def make_loader(backbone: Backbone, frame: pd.DataFrame, targets: list[int], root: Path, *,
                batch_size: int, train: bool = False, augment: bool = True,
                generator: torch.Generator | None = None, shard: tuple[int, int] | None = None,
                seed: int = 0, workers: int = 0, drop_last: bool = False,
                pin_memory: bool = False) -> DataLoader:
    """A loader of (inputs tuple, targets); shuffled with `generator` when train; pin_memory for
    batches bound for a GPU (page-locked, so the copy can overlap the compute).

    shard=(world, rank): this process's part of every epoch (a DistributedSampler seeded with
    `seed`; call loader.sampler.set_epoch(epoch))."""
    ds, collate = get_modality(backbone.modality).dataset(backbone, frame, targets, root, train=train, augment=augment)
    sampler: Sampler | None = None
    if shard is not None:
        sampler = DistributedSampler(ds, num_replicas=shard[0], rank=shard[1], shuffle=train, seed=seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      generator=generator, collate_fn=collate, num_workers=workers, drop_last=drop_last,
                      persistent_workers=False, pin_memory=pin_memory)
