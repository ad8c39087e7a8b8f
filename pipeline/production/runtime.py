"""onnxruntime sessions for exported models: the CUDA provider when there is a GPU, else the CPU."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.modalities.registry import get_modality

logger = logging.getLogger("graft.runtime")


def input_names(modality: str) -> list[str]:
    return get_modality(modality).input_names()


def feeds(modality: str, inputs: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """onnxruntime inputs from a loader's tensors (token ids as int64)."""
    out = {}
    for name, t in zip(input_names(modality), inputs, strict=True):
        arr = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        out[name] = arr.astype(np.int64) if arr.dtype == np.int32 else arr
    return out


THREADS_ENV = "GRAFT_ORT_THREADS"  # intra-op threads per session; `graft serve --workers N` sets cores // N


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver). onnxruntime-gpu lists its CUDA provider even
    on machines without a GPU, so ask the driver itself: torch is not installed in a serving image."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries from the nvidia-* wheels (torch's, or onnxruntime-gpu's
    [cuda,cudnn] extras) once: without torch imported first, onnxruntime does not find them there."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # not in older onnxruntime releases
        try:
            ort.preload_dlls()
        except OSError as exc:  # none installed: the session's own lookup (system CUDA) still runs
            logger.debug("onnxruntime.preload_dlls: %s", exc)


def ort_session(path: Path) -> tuple[Any, str]:
    """An onnxruntime session on CUDA when there is a GPU, otherwise on the CPU. A GPU whose CUDA
    provider cannot start (missing CUDA or cuDNN libraries) falls back to the CPU with a warning."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    if cuda:
        _preload_cuda_libraries()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if os.environ.get(THREADS_ENV):  # several server processes share the cores instead of each taking all
        opts.intra_op_num_threads = int(os.environ[THREADS_ENV])
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    provider = session.get_providers()[0]
    if cuda and provider != "CUDAExecutionProvider":
        logger.warning("%s: the CUDA driver reports a GPU but onnxruntime's CUDA provider did not start, so this "
                       "model runs on the CPU; install the CUDA and cuDNN libraries it needs "
                       "(pip install 'graft[serve-gpu]', i.e. onnxruntime-gpu[cuda,cudnn])", path.name)
    return session, provider
