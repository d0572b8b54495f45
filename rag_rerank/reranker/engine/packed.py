"""Padding-free passes: a batch of pairs as one row of tokens, attention kept within each pair.

Why: a padded pass computes every pair at the length of its longest. One question's 50 KorQuAD
passages average ~270 tokens with the longest at 512: padded, half the pass is padding. Packed,
the linear layers (most of an encoder's work) see only real tokens, and attention runs per pair
through the variable-length flash kernel on a GPU (a per-pair loop elsewhere).

How, with the model's own modules (no copied forward):

* attention: an implementation registered with transformers' ``AttentionInterface`` (the hook
  transformers offers for custom kernels). Mask building skips names it does not know, so no
  T x T mask is ever made; the pair boundaries (``cu_seq_lens_q``, transformers' own keyword for
  packed sequences) reach it through the model's ``**kwargs``;
* positions: restarted at each pair (``position_ids``), with the model family's offset;
* the head: a hook on the base model's encoder hands its output on as each pair's first token
  only, ``[pairs, 1, hidden]``: what the pooler or classification head takes ``[:, 0]`` of.

Families listed in ``_POSITION_OFFSET`` only: their modeling code is known to take all three; any
other model keeps padded passes.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

__all__ = ["ATTENTION", "bucket", "enable", "inputs", "supports", "use_flash", "uses_flash"]

ATTENTION = "rag_rerank_packed"

# model_type -> first position id. RoBERTa-style embeddings count positions from padding_idx + 1
# (None here: read from the config's pad_token_id); the others from 0.
_POSITION_OFFSET: dict[str, int | None] = {
    "bert": 0, "albert": 0, "electra": 0, "roberta": None, "xlm-roberta": None, "camembert": None,
}


def supports(config) -> bool:
    return config.model_type in _POSITION_OFFSET


def position_offset(config) -> int:
    offset = _POSITION_OFFSET[config.model_type]
    return (config.pad_token_id or 0) + 1 if offset is None else offset


def enable(model, device: torch.device, dtype: torch.dtype) -> bool:
    """Switch ``model`` (a ``*ForSequenceClassification`` of a listed family) to packed passes where
    they pay: with the flash kernel, or on the CPU (where the per-pair loop beats padding). Returns
    False, changing nothing, elsewhere: on a GPU without the kernel (fp32) the loop's hundreds of
    small kernels a pass cost more than padding does (H200: 0.76x vs 1.22x ST)."""
    if not supports(model.config):
        return False
    flash = uses_flash(model, device, dtype)
    if device.type != "cpu" and not flash:
        return False
    if flash:
        use_flash()
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _attention)
    model.config._attn_implementation = ATTENTION
    model.base_model.encoder.register_forward_hook(_first_tokens, with_kwargs=True)
    return True


def _first_tokens(module, args, kwargs, output):
    """Packed call: the encoder's ``[1, tokens, hidden]`` output as each pair's first token."""
    starts = kwargs.get("cu_seq_lens_q")
    if starts is None:
        return output
    hidden = output.last_hidden_state
    # clamped: the empty pairs that round a bucket's pair count up start at the row's end
    output.last_hidden_state = hidden[0, starts[:-1].long().clamp(max=hidden.shape[1] - 1)].unsqueeze(1)
    return output


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
               cu_seq_lens_q=None, max_length_q=None, rag_rerank_spans=None, **kwargs):
    """Attention of ``[1, heads, tokens, dim]`` packed pairs, each pair attending to itself only.
    Returns ``[1, tokens, heads, dim]`` as transformers' attention functions do."""
    if cu_seq_lens_q is None:
        raise RuntimeError("a packed model was called without pair boundaries; use Reranker, or reload the model")
    if _flash(query):
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [tokens, heads, dim]
        out = _varlen(q, k, v, cu_seq_lens_q, max_length_q, scaling)
        return out.unsqueeze(0), None
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], scale=scaling) for s, e in rag_rerank_spans]
    return torch.cat(parts, dim=2).transpose(1, 2), None


def _flash(query: torch.Tensor) -> bool:
    return _flash_fits(query.device, query.dtype, query.shape[-1])


def _flash_fits(device: torch.device, dtype: torch.dtype, head_size: int) -> bool:
    """The variable-length flash kernel: CUDA, half precision, head size a multiple of 8 up to 256."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and head_size % 8 == 0 and head_size <= 256


def uses_flash(model, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``model``'s packed attention runs the flash kernel (else the per-pair loop, which needs
    the boundaries on the host: :func:`inputs` ``spans=True``)."""
    config = model.config
    return _flash_fits(device, dtype, config.hidden_size // config.num_attention_heads)


def _varlen(q, k, v, cu, max_len: int, scale):
    if _PUBLIC_VARLEN is not None:
        return _PUBLIC_VARLEN(q, k, v, cu, cu, max_len, max_len, scale=scale)
    return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, max_len, max_len, 0.0, False, False,
                                                   scale=scale)[0]


def use_flash() -> None:
    """Look up the variable-length kernel :func:`_varlen` calls (before the first flash pass)."""
    global _PUBLIC_VARLEN
    _PUBLIC_VARLEN = _public_varlen()


def _public_varlen():
    """torch's public varlen_attn where it takes ``scale`` (2.10 on); else None: the aten op it wraps
    (there since torch 2.1) is called directly."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn if "scale" in inspect.signature(varlen_attn).parameters else None


# Looked up by enable() where a model's passes use the flash kernel, and read inside a pass as a plain
# global, so that torch.compile traces no lookup (dynamo warned about the functools.cache this was before).
# Not at import: importing torch.nn.attention.varlen takes ~0.9 s (it loads dynamo), which a CPU model
# never needs. None: the aten op, the same kernel.
_PUBLIC_VARLEN = None


def inputs(ids: list[np.ndarray], types: list[np.ndarray] | None, offset: int, spans: bool) -> dict:
    """One packed row from each pair's ids (and token types): the model's keyword arguments, arrays in
    numpy; ``spans``: also ``rag_rerank_spans``, the pair boundaries as host ints for the per-pair
    attention loop (left out for the flash kernel: a compiled model would specialise on them)."""
    lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
    cu = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    positions = np.arange(int(cu[-1]), dtype=np.int64) - np.repeat(cu[:-1].astype(np.int64), lengths) + offset
    out = {"input_ids": np.concatenate(ids)[None], "position_ids": positions[None], "cu_seq_lens_q": cu,
           "cu_seq_lens_k": cu, "max_length_q": int(lengths.max()), "max_length_k": int(lengths.max())}
    if spans:
        out["rag_rerank_spans"] = list(zip(cu[:-1].tolist(), cu[1:].tolist()))
    if types is not None:
        out["token_type_ids"] = np.concatenate(types)[None]
    return out


def bucket(arrays: dict, pad_id: int, offset: int, max_length: int) -> dict:
    """``arrays`` (from :func:`inputs`) grown to one of few shapes, so that a CUDA graph recorded for a
    shape serves many passes: tokens rounded up (8 steps an octave: at most 12.5 % more), the extra
    tokens as pad pairs of at most ``max_length``; pairs rounded up to a power of two with empty
    pairs; ``max_length_q`` fixed at ``max_length``. Each real pair keeps its tokens, positions and
    boundaries and attends only to itself, so its output is unchanged: keep the first rows."""
    cu = arrays["cu_seq_lens_q"]
    pairs, tokens = len(cu) - 1, int(cu[-1])
    total = _round_tokens(tokens)
    extra = total - tokens
    pad = [max_length] * (extra // max_length) + ([extra % max_length] if extra % max_length else [])
    slots = 1 << max(2, (pairs + len(pad) - 1).bit_length())
    grown = np.full(slots + 1, total, dtype=cu.dtype)
    grown[: pairs + 1] = cu
    grown[pairs + 1 : pairs + 1 + len(pad)] = tokens + np.cumsum(pad, dtype=np.int64)
    positions = np.concatenate([np.arange(n, dtype=np.int64) for n in pad] or [np.zeros(0, np.int64)]) + offset
    out = dict(arrays, cu_seq_lens_q=grown, cu_seq_lens_k=grown, max_length_q=max_length, max_length_k=max_length,
               input_ids=_grow(arrays["input_ids"], extra, pad_id),
               position_ids=np.concatenate([arrays["position_ids"], positions[None]], axis=1))
    if "token_type_ids" in arrays:
        out["token_type_ids"] = _grow(arrays["token_type_ids"], extra, 0)
    if "rag_rerank_spans" in arrays:
        out["rag_rerank_spans"] = list(zip(grown[:-1].tolist(), grown[1:].tolist()))
    return out


def _round_tokens(tokens: int) -> int:
    step = max(128, 1 << max(0, tokens.bit_length() - 4))  # 1/8 of the octave's start, 128 at least
    return -(-max(tokens, 1) // step) * step


def _grow(row: np.ndarray, extra: int, value: int) -> np.ndarray:
    return np.concatenate([row, np.full((1, extra), value, dtype=row.dtype)], axis=1)
