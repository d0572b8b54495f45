"""--memory-report: what training should need, next to what it took."""
from __future__ import annotations

import resource
import sys

import torch

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


def estimate(model, *, batch_size: int, seq_len: int, mixed_precision: bool, optimizer_states: int = 2) -> dict:
    """Bytes for parameters, gradients, AdamW states and activations.

    Activations follow Korthikanti et al. (2022): per layer pass about
    ``s*b*h*(34 + 5*a*s/h)`` bytes in 16-bit; fp32 doubles it. ALBERT runs its
    shared layer ``num_hidden_layers`` times, so passes, not distinct layers, count.
    """
    params = sum(p.numel() * _BYTES.get(p.dtype, 4) for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.numel() * 4 for p in trainable)
    optim = sum(p.numel() * 4 * optimizer_states for p in trainable)
    cfg = getattr(model, "config", None)
    h = getattr(cfg, "hidden_size", 768)
    a = getattr(cfg, "num_attention_heads", 12)
    layers = getattr(cfg, "num_hidden_layers", 12)
    per_layer = seq_len * batch_size * h * (34 + 5 * a * seq_len / h)
    acts = int(per_layer * layers * (1 if mixed_precision else 2))
    return {"parameters": params, "gradients": grads, "optimizer": optim, "activations": acts,
            "total": params + grads + optim + acts}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measured_peak(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA allocator peak, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "process peak RSS (CPU: includes Python and data)"


def format_report(est: dict, peak: tuple[int, str]) -> str:
    gib = lambda b: f"{b / 2**30:.3f} GiB"
    lines = ["| part | estimate |", "|---|---:|"]
    lines += [f"| {k} | {gib(v)} |" for k, v in est.items()]
    lines.append(f"| **measured peak** ({peak[1]}) | {gib(peak[0])} |")
    return "\n".join(lines)
