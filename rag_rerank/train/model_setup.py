"""Building the cross-encoder to train: base weights, precision, and the memory switches.

Freezing is by parameter group because ALBERT shares one layer across all its
passes ("the bottom N layers" means nothing there); BERT-like models may also
freeze their bottom N layers. Gradient checkpointing for ALBERT is our own (transformers
refuses it): each pass of the shared layer is recomputed in backward. LoRA targets ALBERT's query/key/value/dense
explicitly (PEFT has no default for it) and trains the classifier head fully
via ``modules_to_save``.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("rag_rerank.train")

ALBERT_LORA_TARGETS = ["query", "key", "value", "dense"]


def model_family(model) -> str:
    return getattr(model.config, "model_type", "unknown")


def parameter_groups(model) -> dict[str, list[str]]:
    """Parameter names by group: embeddings | encoder | pooler | classifier (+ layer.N for BERT-likes)."""
    groups: dict[str, list[str]] = {"embeddings": [], "encoder": [], "pooler": [], "classifier": []}
    for name, _ in model.named_parameters():
        if ".embeddings." in name or name.startswith("embeddings.") or "embedding_hidden_mapping_in" in name:
            groups["embeddings"].append(name)
        elif ".pooler" in name:
            groups["pooler"].append(name)
        elif name.startswith(("classifier", "score", "pre_classifier")):
            groups["classifier"].append(name)
        else:
            groups["encoder"].append(name)
            parts = name.split(".")
            if "layer" in parts:
                idx = parts[parts.index("layer") + 1]
                if idx.isdigit():
                    groups.setdefault(f"layer.{idx}", []).append(name)
    return groups


def apply_freezing(model, groups_to_freeze: list[str], bottom_layers: int = 0) -> list[str]:
    """Set requires_grad=False on the named groups; return the frozen parameter names."""
    groups = parameter_groups(model)
    unknown = set(groups_to_freeze) - set(groups)
    if unknown:
        raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; choose from embeddings, encoder, pooler, "
                         "classifier")
    names = [n for g in groups_to_freeze for n in groups[g]]
    if bottom_layers:
        if model_family(model) == "albert":
            raise ValueError("ALBERT shares one layer across all passes, so 'bottom N layers' does not exist; "
                             "freeze by group instead (freeze=['embeddings'] or ['encoder'])")
        layers = sorted(int(k.split(".")[1]) for k in groups if k.startswith("layer."))
        if bottom_layers > len(layers):
            raise ValueError(f"freeze_bottom_layers={bottom_layers} but the model has {len(layers)} layers")
        names += [n for i in layers[:bottom_layers] for n in groups[f"layer.{i}"]]
    frozen = set(names)
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad = False
    return sorted(frozen)


def fuse_gelu(model) -> int:
    """Swap transformers' Python ``gelu_new`` for PyTorch's fused tanh GELU (the same function).

    ``gelu_new`` runs as six elementwise kernels and saves each intermediate for backward;
    ALBERT applies it in all 12 passes of its shared layer, so on short Korean pairs it is a
    large share of activation memory and of kernel launches. Returns how many were swapped;
    the saved config still says ``gelu_new``.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
        for name, value in list(vars(module).items()):  # activations kept as plain attributes
            if isinstance(value, NewGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def enable_gradient_checkpointing(model) -> str:
    """Recompute activations in backward instead of keeping them; returns how it was done.

    transformers refuses for ALBERT, yet ALBERT is where it pays most: its one shared layer
    runs 12 times and every pass keeps its own activations. We checkpoint each pass of the
    layer group ourselves (:func:`checkpoint_albert_passes`).
    """
    if model_family(model) == "albert":
        n = checkpoint_albert_passes(model)
        return f"ALBERT: each of the shared layer group's passes checkpointed by rag-rerank ({n} group)"
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{model_family(model)} does not support gradient checkpointing in transformers; "
                         "use a smaller max_length, batch size, LoRA or frozen groups instead")
    enable = getattr(model, "activation_checkpointing_enable", None)  # the transformers 5 name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return "transformers' gradient checkpointing"


def checkpoint_albert_passes(model) -> int:
    """Wrap every ALBERT layer group's forward in ``torch.utils.checkpoint`` (non-reentrant).

    The forward is replaced on the instance, so parameter names and saved checkpoints are
    unchanged; during training only each pass's input is kept, and the pass is recomputed
    in backward (dropout masks replayed: the RNG state is preserved).
    """
    from torch.utils.checkpoint import checkpoint

    groups = [m for m in model.modules() if type(m).__name__ == "AlbertLayerGroup"]
    if not groups:
        raise ValueError("no ALBERT layer group found to checkpoint")
    for group in groups:
        if getattr(group, "_rag_rerank_checkpointed", False):
            continue
        plain = group.forward

        def forward(*args, _plain=plain, _group=group, **kwargs):
            if _group.training and torch.is_grad_enabled():
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)

        group.forward = forward
        group._rag_rerank_checkpointed = True
    return len(groups)


def apply_lora(model, r: int, alpha: int, dropout: float, targets: list[str] | None):
    from peft import LoraConfig, TaskType, get_peft_model

    if targets is None and model_family(model) == "albert":
        targets = ALBERT_LORA_TARGETS
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=targets, modules_to_save=["classifier"])
    return get_peft_model(model, config)


def resolve_precision(requested: str, device: torch.device) -> tuple[bool, bool, str | None]:
    """(fp16, bf16, note). Falls back where the hardware cannot, and says so."""
    requested = requested.lower()
    if requested in ("fp32", "no", "none"):
        return False, False, None
    if device.type != "cuda":
        return False, False, (None if requested == "auto" else
                              f"{requested} mixed precision needs a CUDA GPU; training in fp32 on {device.type}")
    bf16_ok = torch.cuda.is_bf16_supported()
    if requested == "fp16":
        return True, False, None
    if requested in ("bf16", "auto"):
        if bf16_ok:
            return False, True, None
        return True, False, "bf16 needs an Ampere or newer GPU; training in fp16"
    raise ValueError(f"unknown mixed_precision {requested!r}; use fp16, bf16, fp32 or auto")
