"""Feed-forward bias + activation inside the matrix multiply (a cuBLASLt GEMM epilogue).

Why: an encoder layer's feed-forward expands each token to 4x the hidden size, and eager PyTorch
writes that expansion out, reads it back to add nothing but the activation, and writes it again.
On an H200 the GELU kernels were 11 % of an e5-small pass (BENCHMARKS.md, session 12's profile),
a memory round trip that the GEMM can do on its way out: ``torch._addmm_activation`` runs bias +
GELU (or ReLU) as the epilogue of one cuBLASLt GEMM.

How, with the model's own modules (no copied forward): the feed-forward's ``nn.Linear`` is swapped
for a :class:`FusedLinear` holding the same parameters (same state-dict keys), and the activation
module after it for ``nn.Identity``. Where: the ``*Intermediate`` modules of the BERT family
(``dense`` then ``intermediate_act_fn``) and ALBERT's layer (``ffn`` then ``activation``), whose
forwards call the two one after the other and nothing in between.

Numerics: ReLU is exact; cuBLASLt's GELU is the tanh approximation, so for a model trained with
exact (erf) GELU, such as e5, each activation moves by at most ~5e-4, below fp16's resolution at 1.0
(what the speed bench's drift and score-correlation columns check); for ALBERT's ``gelu_new`` it is
the model's own function. On a CPU the same call computes exact GELU (used by the tests).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FusedLinear", "enable"]

# (owner module's class name suffix, linear attribute, activation attribute)
_FEED_FORWARDS = (("Intermediate", "dense", "intermediate_act_fn"), ("AlbertLayer", "ffn", "activation"))


class FusedLinear(nn.Linear):
    """``activation(x @ W.T + b)`` as one ``torch._addmm_activation`` call, on ``linear``'s own parameters."""

    def __init__(self, linear: nn.Linear, gelu: bool) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.gelu = gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch._addmm_activation(self.bias, flat, self.weight.t(), use_gelu=self.gelu)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", then {'gelu' if self.gelu else 'relu'} in the epilogue"


def _kind(activation) -> bool | None:
    """True: a GELU (exact or tanh); False: ReLU; None: an activation the epilogue does not have."""
    from transformers.activations import ACT2CLS  # the config names' classes: no probing for renamed ones

    if isinstance(activation, (nn.GELU, *(ACT2CLS[name] for name in ("gelu", "gelu_new", "gelu_pytorch_tanh")))):
        return True
    if isinstance(activation, nn.ReLU):
        return False
    return None


def enable(model: nn.Module) -> int:
    """Fuses every feed-forward of ``model`` that qualifies (a linear with a bias, then a GELU or ReLU
    module); returns how many were fused (0: the model is left as it was)."""
    fused = 0
    for module in list(model.modules()):
        for owner, linear_name, act_name in _FEED_FORWARDS:
            if not type(module).__name__.endswith(owner):
                continue
            linear, act = getattr(module, linear_name, None), getattr(module, act_name, None)
            kind = _kind(act)
            if type(linear) is nn.Linear and linear.bias is not None and kind is not None:
                setattr(module, linear_name, FusedLinear(linear, gelu=kind))
                setattr(module, act_name, nn.Identity())
                fused += 1
    return fused
