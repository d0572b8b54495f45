"""Residual add + LayerNorm as one GPU kernel, in the BERT family's output blocks.

Why: every encoder layer ends its attention and its feed-forward with ``LayerNorm(dense(h) + residual)``,
which eager PyTorch runs as two kernels: the add writes the sum out, LayerNorm reads it back. On an
H200 these two were 24 % of an e5-small pass (BENCHMARKS.md, session 12's profile: LayerNorm 17.7 %,
adds 6.4 %), and torch's LayerNorm kernel moved ~1 TB/s at hidden size 384 (96 us for 65k tokens),
a fraction of the memory's bandwidth. One Triton kernel here reads both inputs once, adds, normalises
several rows a program, and writes once: 30 us for a 32k-token pass against 72 for the pair (2.5 TB/s).

Where: in passes replayed from CUDA graphs only (the reranker decides): Triton's Python launcher
costs ~35 us of host time a launch, so in passes launched op by op the host, not the device, sets the pace.

How, with the model's own modules (no copied layer): the ``*SelfOutput`` / ``*Output`` blocks of the
listed families, whose forward is ``LayerNorm(dropout(dense(h)) + input)``, are swapped for an
:class:`AddNorm` holding the same ``dense``, ``LayerNorm`` and ``dropout`` modules (same state-dict
keys). Inference only (the reranker's model is in eval mode: dropout is the identity). ALBERT is not
listed: its add + LayerNorm sit inside its attention and layer forwards, between other work.

Numerics: the sum is rounded to the model's dtype before it is normalised and the mean and variance
are taken in fp32, as eager PyTorch does; only the reduction order differs. On a device the kernel does
not run on (a CPU tensor), or in training, the block computes the eager ops; the tests run the kernel under
Triton's interpreter on the CPU.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["AddNorm", "available", "enable", "kernel"]

# Output blocks whose forward is LayerNorm(dropout(dense(h)) + input): the families ``packed`` lists
# (their modeling code read for transformers 5; tests check each class still has these modules).
BLOCKS = frozenset(f"{family}{part}" for family in ("Bert", "Roberta", "XLMRoberta", "Electra", "Camembert")
                   for part in ("SelfOutput", "Output"))

# Rows normalised by one program. H200, 32k tokens of width 384 in fp16: 1, 2 or 4 rows 30 us, 8 rows
# 31, 16 rows 41 (eager add + LayerNorm 72): bench/results/speed_h200_s15/call2/probe_norm.log.
_ROWS = 4


class AddNorm(nn.Module):
    """``LayerNorm(dense(h) + input)`` of a BERT-family output block, the add and the norm in one kernel."""

    def __init__(self, block: nn.Module, run, devices: tuple[str, ...] = ("cuda",)) -> None:
        super().__init__()
        self.dense, self.LayerNorm, self.dropout = block.dense, block.LayerNorm, block.dropout
        self.run = run  # the launcher: kernel()'s, or one a test gives
        self.devices = devices  # where the kernel runs (tests add "cpu" for Triton's interpreter)
        self.train(block.training)  # a new module starts in training mode; the block's model may be in eval

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        if self.training or hidden_states.device.type not in self.devices:
            return self.LayerNorm(hidden_states + input_tensor)
        return self.run(hidden_states, input_tensor, self.LayerNorm)

    def extra_repr(self) -> str:
        return f"residual add + LayerNorm in one kernel on {', '.join(self.devices)}"


def available() -> bool:
    """Whether Triton (which CUDA builds of torch bring) can be imported here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def enable(model: nn.Module, run=None, devices: tuple[str, ...] = ("cuda",)) -> int:
    """Swaps every listed output block of ``model`` for an :class:`AddNorm`; returns how many (0: the
    model is left as it was). ``run``: the launcher (default :func:`kernel`'s), on ``devices``."""
    run = run or kernel()
    swapped = 0
    for parent in list(model.modules()):
        for name, block in list(parent.named_children()):
            if type(block).__name__ in BLOCKS and _fits(block):
                setattr(parent, name, AddNorm(block, run, devices))
                swapped += 1
    return swapped


def _fits(block: nn.Module) -> bool:
    """A listed block (its modules are the modeling code's) whose LayerNorm the kernel computes: torch's own,
    over the last dimension, with a weight and a bias."""
    norm = block.LayerNorm
    return (type(norm) is nn.LayerNorm and norm.weight is not None and norm.bias is not None
            and len(norm.normalized_shape) == 1)


_LAUNCH = None


def kernel():
    """The launcher ``run(x, residual, norm) -> LayerNorm(x + residual)``, its Triton kernel built once."""
    global _LAUNCH
    if _LAUNCH is None:
        _LAUNCH = launcher(_build())
    return _LAUNCH


def launcher(compiled):
    """A launcher around ``compiled`` (the jitted kernel of :func:`_build`, or an interpreted one in tests)."""
    import triton

    def run(x: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        width = x.shape[-1]
        flat, res = x.reshape(-1, width).contiguous(), residual.reshape(-1, width).contiguous()
        out = torch.empty_like(flat)
        rows = flat.shape[0]
        compiled[(triton.cdiv(rows, _ROWS),)](flat, res, norm.weight, norm.bias, out, rows, norm.eps, WIDTH=width,
                                              BLOCK=triton.next_power_of_2(width), ROWS=_ROWS, num_warps=4)
        return out.view(x.shape)

    return run


def _build():
    import triton
    import triton.language as tl

    # rows not specialised on: every pass has its own token count, and one compiled kernel serves them all
    @triton.jit(do_not_specialize=["rows"])
    def add_norm(x_ptr, r_ptr, w_ptr, b_ptr, out_ptr, rows, eps, WIDTH: tl.constexpr, BLOCK: tl.constexpr,
                 ROWS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)[:, None]
        col = tl.arange(0, BLOCK)[None, :]
        inside = col < WIDTH
        mask = (row < rows) & inside
        at = row * WIDTH + col
        # added in the model's dtype, as eager PyTorch adds before its LayerNorm
        total = (tl.load(x_ptr + at, mask=mask, other=0.0) + tl.load(r_ptr + at, mask=mask, other=0.0)).to(tl.float32)
        mean = tl.sum(total, axis=1) / WIDTH
        centred = tl.where(mask, total - mean[:, None], 0.0)
        var = tl.sum(centred * centred, axis=1) / WIDTH
        weight = tl.load(w_ptr + col, mask=inside, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + col, mask=inside, other=0.0).to(tl.float32)
        out = centred * tl.rsqrt(var + eps)[:, None] * weight + bias
        tl.store(out_ptr + at, out.to(out_ptr.dtype.element_ty), mask=mask)

    return add_norm
