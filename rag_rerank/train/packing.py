"""Training without padding: a batch of pairs as one packed row of real tokens, as inference scores them.

Why: a padded batch computes every pair at the length of its longest. Length grouping (``fast.py``) keeps
the waste low on short pairs, but KorQuAD-length pairs (a question and a ~270-token paragraph, many cut at
512) still pad a fifth or more of a batch, and padded attention with a mask cannot use the flash kernel.
Packed, the linear layers see only real tokens and attention runs per pair through the variable-length
flash kernel, whose backward torch ships.

How (the inference engine's pieces, :mod:`rag_rerank.reranker.engine.packed`):

* the batch: :class:`PairPackingCollator` tokenises in the loader workers without padding and builds the
  packed row (:func:`packed.inputs`: positions restarting per pair, the pair boundaries ``cu_seq_lens_q``);
* attention: an implementation registered with transformers' ``AttentionInterface`` that runs packed rows
  packed (flash kernel on a GPU in half precision, with the model's attention dropout; a per-pair loop
  elsewhere) and hands any padded call - the evaluator's ``predict`` during training, a checkpointed
  pass's recomputation of a padded batch - to transformers' own SDPA attention, with its mask
  (registered with ``AttentionMaskInterface``: a packed call builds no ``tokens x tokens`` mask);
* the head: the encoder hands on each pair's first token (``packed._first_tokens``).

:func:`enable` switches a model and returns the handle that switches it back, before the model is
saved: the saved directory is an ordinary model.
"""
from __future__ import annotations

import numpy as np
import torch

from ..reranker.engine import packed

__all__ = ["ATTENTION", "PairPackingCollator", "enable", "packs"]

ATTENTION = "rag_rerank_packed_train"
_KEYS = ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "rag_rerank_spans")


def packs(setting: bool | None, model, device: torch.device, half: bool) -> tuple[bool, str]:
    """Whether training packs its batches, and why. ``setting`` None (auto): where the flash kernel runs
    the attention (CUDA, bf16/fp16, a head size it takes) for a family whose modeling code takes packed
    rows; True: also elsewhere (a per-pair attention loop: exact, slower than padding on a CPU);
    False: padded."""
    hf = _hf_model(model)
    if setting is False:
        return False, "padded batches (pack false)"
    if not packed.supports(hf.config):
        return False, f"padded batches: {hf.config.model_type} is not a family whose modeling code takes packed rows"
    if device.type == "cuda" and half and packed.uses_flash(hf, device, torch.float16):
        return True, "packed batches: no padding, variable-length flash attention"
    if setting:
        return True, "packed batches: no padding, attention in a per-pair loop (no flash kernel here)"
    return False, ("padded batches (pack auto packs where the flash kernel runs: CUDA in bf16/fp16; "
                   "pack true packs here too, with a per-pair attention loop)")


class _Switched:
    """What :func:`enable` changed, to put back (:meth:`restore`) before the model is saved."""

    def __init__(self, hf, previous: str | None, hook) -> None:
        self.hf, self.previous, self.hook = hf, previous, hook

    def restore(self) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
            self.hf.config._attn_implementation = self.previous


def enable(cross_encoder) -> _Switched:
    """Switch ``cross_encoder`` (a sentence-transformers CrossEncoder of a listed family, PEFT-wrapped or
    not) to the dual attention above; padded calls keep working unchanged."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    module = cross_encoder[0]
    hf = _hf_model(module.model)
    if not packed.supports(hf.config):
        raise ValueError(f"packed training: {hf.config.model_type} models are not supported (padded batches only)")
    if next(hf.parameters()).device.type == "cuda":
        packed.use_flash()  # (on a CPU, skip its ~1 s import)
    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, _mask)
    previous = hf.config._attn_implementation
    hf.config._attn_implementation = ATTENTION
    hook = hf.base_model.encoder.register_forward_hook(packed._first_tokens, with_kwargs=True)
    # sentence-transformers passes a forward only the keywords it declares when it has no **kwargs
    # (a PEFT wrapper may not): the packed row's keys must reach the model
    if getattr(module, "model_forward_params", None) is not None:
        module.model_forward_params = set(module.model_forward_params) | set(_KEYS)
    return _Switched(hf, previous, hook)


def _hf_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
               cu_seq_lens_q=None, max_length_q=None, rag_rerank_spans=None, **kwargs):
    if cu_seq_lens_q is None:  # a padded call: transformers' SDPA attention with its mask
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if packed._flash(query):
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [tokens, heads, dim]
        if dropout > 0:  # the aten op takes dropout (its backward replays the same mask); varlen_attn does not
            out = torch.ops.aten._flash_attention_forward(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q,
                                                          max_length_q, dropout, False, False, scale=scaling)[0]
        else:
            out = packed._varlen(q, k, v, cu_seq_lens_q, max_length_q, scaling)
        return out.unsqueeze(0), None
    if rag_rerank_spans is None:
        rag_rerank_spans = list(zip(cu_seq_lens_q[:-1].tolist(), cu_seq_lens_q[1:].tolist()))
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling)
        for s, e in rag_rerank_spans]
    return torch.cat(parts, dim=2).transpose(1, 2), None


def _mask(*, attention_mask=None, **kwargs):
    """No mask for a packed call (its pairs are kept apart by their boundaries, not a ``tokens x tokens``
    mask); SDPA's mask for a padded one."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


class PairPackingCollator:
    """(query, document, label) rows -> one packed row (no padding), in the loader worker processes;
    truncated as :class:`~rag_rerank.train.fast.PairTokenizingCollator` truncates."""

    valid_label_columns = ["label"]

    def __init__(self, tokenizer, max_length: int, position_offset: int) -> None:
        self.tokenizer, self.max_length, self.offset = tokenizer, max_length, position_offset

    def __call__(self, rows: list[dict]) -> dict:
        cols = [c for c in rows[0] if c != "label"]
        enc = self.tokenizer([r[cols[0]] for r in rows], [r[cols[1]] for r in rows], truncation="longest_first",
                             max_length=self.max_length)
        ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
        types = [np.asarray(x, dtype=np.int64) for x in enc["token_type_ids"]] if "token_type_ids" in enc else None
        arrays = packed.inputs(ids, types, self.offset, spans=True)
        batch = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}
        batch["label"] = torch.tensor([float(r["label"]) for r in rows])
        return batch
