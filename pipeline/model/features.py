"""Backbone embeddings cached by (backbone fingerprint, content sha256), in paths.cache: a folder,
or a URL (s3://, gs://) that the machines of a team share.

The backbone runs at most once per distinct example and model; select's probe and the
linear-probe training both read from here. Each write replaces the backbone's whole .npz (a
rename, or one PUT): a reader sees the old or the new cache, and two writers at once lose at
most the other's additions, which are computed again when next missing.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core.progress import progress
from pipeline.core.storage import Store
from pipeline.model.backbones import Backbone
from pipeline.model.loaders import make_loader


class FeatureCache:
    """sha256 -> embedding, one .npz per backbone fingerprint (no pickles: allow_pickle=False)."""

    def __init__(self, folder: str | Path, backbone: Backbone):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone.name)[-60:]
        self.store, self.name = Store(folder), f"{slug}-{backbone.fingerprint()}.npz"
        self.index: dict[str, int] = {}
        self.vectors = np.zeros((0, backbone.dim), dtype=np.float32)
        if self.store.exists(self.name):
            with np.load(io.BytesIO(self.store.read_bytes(self.name)), allow_pickle=False) as data:
                self.vectors = data["vectors"]
                self.index = {s: i for i, s in enumerate(data["sha256"].tolist())}

    def missing(self, shas: list[str]) -> list[str]:
        return list(dict.fromkeys(s for s in shas if s not in self.index))

    def add(self, shas: list[str], vectors: np.ndarray) -> None:
        start = len(self.vectors)
        self.vectors = np.concatenate([self.vectors, vectors.astype(np.float32)])
        self.index.update({s: start + i for i, s in enumerate(shas)})
        keys = np.array(sorted(self.index, key=self.index.__getitem__), dtype="U64")
        buf = io.BytesIO()
        np.savez(buf, vectors=self.vectors, sha256=keys)
        self.store.put(buf.getvalue(), self.name)

    def get(self, shas: list[str]) -> np.ndarray:
        return self.vectors[[self.index[s] for s in shas]]


@torch.inference_mode()
def embed_frame(backbone: Backbone, frame: pd.DataFrame, root: Path, cache_dir: str | Path, *,
                batch_size: int = 32, device: torch.device | None = None) -> np.ndarray:
    """Embeddings for every row of `frame` (eval preprocessing), computing only uncached ones, on
    `device` (the CPU by default); the backbone goes back to where it was afterwards."""
    cache = FeatureCache(cache_dir, backbone)
    todo = cache.missing(frame["sha256"].tolist())
    if todo:
        rows = frame.drop_duplicates("sha256").set_index("sha256").loc[todo].reset_index()
        device = device or torch.device("cpu")
        loader = make_loader(backbone, rows, [0] * len(rows), root, batch_size=batch_size,
                             pin_memory=device.type == "cuda")
        home = next(backbone.module.parameters()).device
        module = backbone.module.to(device).eval()
        out = []
        try:
            for inputs, _ in progress(loader, desc=f"embedding ({backbone.name})", unit="batch"):
                out.append(module(*(t.to(device, non_blocking=True) for t in inputs)).float().cpu().numpy())
        finally:
            backbone.module.to(home)
        cache.add(todo, np.concatenate(out))
    return cache.get(frame["sha256"].tolist())
