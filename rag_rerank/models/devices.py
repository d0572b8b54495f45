"""Device and dtype choice shared by every model wrapper."""
from __future__ import annotations

import functools
import os
import platform

import torch

_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def staged(array, device: torch.device) -> torch.Tensor:
    """A host array as a tensor to copy to ``device``: pinned for CUDA, so that a ``non_blocking``
    copy is asynchronous and the host goes on while it runs; as it is elsewhere."""
    tensor = torch.from_numpy(array)
    return tensor.pin_memory() if device.type == "cuda" else tensor


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Explicit device, else cuda > mps > cpu.

    Under torchrun / accelerate (``LOCAL_RANK`` set) a bare ``cuda`` means this process's
    own GPU, ``cuda:LOCAL_RANK``: every rank putting its model on cuda:0 makes DDP fail
    on rank 1 and up.
    """
    if device is not None and str(device) != "cuda":
        return _available(device)
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is not None and local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
            return torch.device("cuda", int(local_rank))
        return torch.device("cuda")
    if device is not None:
        return _available(device)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available(device: str | torch.device) -> torch.device:
    """``device`` if this machine has it: asked for a GPU it lacks, say so here, not deep in ``.to()``."""
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps ({exc})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is visible (torch {torch.__version__}, {build}); "
                             "use device='cpu' or leave it unset")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps': Apple's Metal backend is not available here; use 'cpu'")
    return device


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


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool | None:
    """Whether this CPU computes bf16 natively (x86: AVX512-BF16 or AMX-BF16; Arm: the bf16 extension); None
    where it cannot be told (no /proc/cpuinfo). Without them torch runs bf16 matrix products emulated: on a
    2-core AVX2 EPYC a small bf16 linear layer took 17x its fp32 time (BENCHMARKS.md, session 19)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not flags:
        return None
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})
