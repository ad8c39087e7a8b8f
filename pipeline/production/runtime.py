"""onnxruntime sessions for exported models: the CUDA provider when there is a GPU, else the CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def input_names(modality: str) -> list[str]:
    return ["input"] if modality == "image" else ["input_ids", "attention_mask"]


def feeds(modality: str, inputs: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """onnxruntime inputs from a loader's tensors (token ids as int64)."""
    out = {}
    for name, t in zip(input_names(modality), inputs, strict=True):
        arr = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        out[name] = arr.astype(np.int64) if arr.dtype == np.int32 else arr
    return out


THREADS_ENV = "GRAFT_ORT_THREADS"  # intra-op threads per session; `graft serve --workers N` sets cores // N


def ort_session(path: Path) -> tuple[Any, str]:
    """An onnxruntime session on CUDA when torch sees a GPU, otherwise on the CPU."""
    import onnxruntime as ort
    import torch

    # onnxruntime-gpu lists CUDA even on machines without a GPU; ask torch whether one is there
    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if os.environ.get(THREADS_ENV):  # several server processes share the cores instead of each taking all
        opts.intra_op_num_threads = int(os.environ[THREADS_ENV])
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    return session, session.get_providers()[0]
