"""Device and dtype choice shared by every model wrapper."""
from __future__ import annotations

import os

import torch

_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Explicit device, else cuda > mps > cpu.

    Under torchrun / accelerate (``LOCAL_RANK`` set) a bare ``cuda`` means this process's
    own GPU, ``cuda:LOCAL_RANK``: every rank putting its model on cuda:0 makes DDP fail
    on rank 1 and up.
    """
    if device is not None and str(device) != "cuda":
        return torch.device(device)
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is not None and local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
            return torch.device("cuda", int(local_rank))
        return torch.device("cuda")
    if device is not None:
        return torch.device(device)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Explicit dtype, else bf16 on Ampere+ GPUs, fp16 on older GPUs and MPS, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and dtype != "auto":
        try:
            return _DTYPES[str(dtype).lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
