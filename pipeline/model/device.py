"""Where training runs and at what precision: train.device resolved, and the CUDA autocast dtype.

On the CPU everything runs in float32. On a GPU, autocast runs matrix products in bfloat16 where
the GPU has it (compute capability 8.0 and up: A100, H100, L4, RTX 30xx and newer), else in
float16 with a gradient scaler (V100, T4), since float16's range underflows small gradients.
"""

from __future__ import annotations

import torch

from pipeline.core.errors import ParamsError


def resolve_device(name: str) -> torch.device:
    """train.device as a torch.device: auto is the first GPU when there is one, else the CPU. A GPU
    asked for by name must be there: training on the CPU instead would be silently slower."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParamsError(f"train.device: {name} asks for a GPU, but torch sees none (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda or 'none'}); set train.device: auto or cpu, "
                              "or check the driver with nvidia-smi")
        if device.index is not None and device.index >= count:
            raise ParamsError(f"train.device: {name}, but torch sees {count} GPU(s) (cuda:0 to cuda:{count - 1}); "
                              "pick one of those, or set train.device: cuda")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype for torch.autocast on `device`: None (float32, no autocast) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for float16 autocast (a no-op pass-through otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)
