"""A fine-tuned model as a compact delta against the base it was fine-tuned from.

Why: a fine-tuned e5-small cross-encoder is 470 MB in fp32, three quarters of it the
embedding table, which LoRA training never changes. What changes is low-rank (a merged LoRA
update ``W + B @ A`` of rank r) plus a tiny classification head. :func:`export_delta` finds
exactly that by comparing the two state dicts: unchanged tensors are left out (and
fingerprinted, so the delta refuses to go onto a different base), changed matrices whose
update has rank <= r are stored as two fp16 factors, anything else changed is stored whole.
:func:`apply_delta` rebuilds the fine-tuned model on the base directory.

A delta exported from a model trained on a vocabulary-cut twin of the base (rag_rerank.models.subset:
same layer weights, fewer embedding rows) applies to the full base: embeddings are not part of
the delta, only compared where the shapes agree.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

DELTA_FILE = "delta.safetensors"
DELTA_INFO = "delta.json"
# what a loader reads beside the weights: these travel with the delta as they are. The last two are
# model_settings.CONFIG_FILE and known_queries.DATA_FILE, spelled out: models (and so the reranker)
# imports this module, and must not reach those later stages (tests/test_layers.py; equality tested).
MODEL_FILES = ("config.json", "config_sentence_transformers.json", "sentence_bert_config.json", "modules.json",
               "rag_rerank.json", "known_queries.jsonl.gz")
# the tokenizer comes from the base: a model trained on a vocabulary-cut twin gets the full one back
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
                    "vocab.txt")


def _load(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _base_key(key: str, base: dict) -> str | None:
    """The base name of a fine-tuned tensor: ``bert.encoder...`` -> ``encoder...`` (a *ForSequenceClassification
    wraps the plain model under its own prefix)."""
    if key in base:
        return key
    head, _, rest = key.partition(".")
    return rest if rest in base else None


def _fingerprint(tensors) -> str:
    h = hashlib.sha256()
    for name, t in sorted(tensors):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().float().numpy().tobytes())
    return h.hexdigest()


def export_delta(trained: str | Path, base: str | Path, out: str | Path, *, rank: int = 16,
                 tolerance: float = 1e-3, base_name: str | None = None) -> dict:
    """Write ``out/delta.safetensors`` + ``out/delta.json`` + the trained directory's :data:`MODEL_FILES`.

    ``rank``: the largest update rank stored as factors (LoRA's r). ``tolerance``: the largest
    relative reconstruction error (Frobenius) accepted for a factored update; a matrix whose
    update is not low-rank enough is stored whole and named in the info. ``base_name``: how a
    loader finds the base again (``models.materialize`` takes an offline name). Returns the info.
    """
    import torch
    from safetensors.torch import save_file

    trained, base, out = Path(trained), Path(base), Path(out)
    fine, plain = _load(trained), _load(base)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    factored, whole, same, skipped_shape = [], [], [], []
    for key, t in fine.items():
        b_key = _base_key(key, plain)
        if b_key is None:
            tensors[f"{key}:full"] = t.float()
            whole.append(key)
            continue
        b = plain[b_key]
        if b.shape != t.shape:
            # a vocabulary-cut twin: only embedding rows may differ in count, and they must be untouched
            if t.ndim != 2 or t.shape[1] != b.shape[1] or "embeddings" not in key:
                raise ValueError(f"{key}: shape {tuple(t.shape)} in the fine-tuned model, {tuple(b.shape)} in the base")
            skipped_shape.append(key)
            continue
        if torch.equal(t, b):
            same.append((b_key, b))
            continue
        d = (t.double() - b.double())
        if d.ndim == 2 and min(d.shape) > rank:
            u, s, vh = torch.linalg.svd(d, full_matrices=False)
            root = s[:rank].sqrt()
            up, down = (u[:, :rank] * root).half(), (root[:, None] * vh[:rank]).half()
            err = float(torch.linalg.norm(up.double() @ down.double() - d) / torch.linalg.norm(d))
            if err <= tolerance:
                tensors[f"{key}:up"], tensors[f"{key}:down"] = up, down
                factored.append((key, b_key, round(err, 6)))
                continue
        tensors[f"{key}:delta"] = d.float() if d.numel() < 65536 else d.half()
        whole.append(key)
    touched = [(plain_key, plain[plain_key]) for _, plain_key, _ in factored]
    touched += [(k, plain[k]) for k in (_base_key(w, plain) for w in whole) if k is not None]
    info = {
        "format": 1,
        "base": base_name or str(base),
        "rank": rank,
        "factored": [{"name": k, "base": b, "relative_error": e} for k, b, e in factored],
        "whole": whole,
        "unchanged": len(same) + len(skipped_shape),
        "vocabulary_cut_tensors": skipped_shape,
        "key_map": {k: _base_key(k, plain) for k in fine},
        # the base tensors the delta is added to: applying it to other weights is refused
        "base_fingerprint": _fingerprint(touched),
        "parameters_stored": int(sum(t.numel() for t in tensors.values())),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / DELTA_FILE), metadata={"format": "pt"})
    (out / DELTA_INFO).write_text(json.dumps(info, indent=1))
    for name in MODEL_FILES:
        if (trained / name).is_file():
            shutil.copy2(trained / name, out / name)
    return info


def apply_delta(delta_dir: str | Path, base: str | Path, out: str | Path) -> Path:
    """Rebuild the fine-tuned model in ``out`` from the base directory and the delta."""
    import torch
    from safetensors.torch import load_file, save_file

    delta_dir, base, out = Path(delta_dir), Path(base), Path(out)
    info = json.loads((delta_dir / DELTA_INFO).read_text())
    if info.get("format") != 1:
        raise ValueError(f"{delta_dir}: unknown delta format {info.get('format')!r}")
    parts = load_file(str(delta_dir / DELTA_FILE))
    plain = _load(base)
    touched = [f["base"] for f in info["factored"]] + [info["key_map"][w] for w in info["whole"]
                                                        if info["key_map"].get(w)]
    missing = [k for k in touched if k not in plain]
    if missing or _fingerprint([(k, plain[k]) for k in touched]) != info["base_fingerprint"]:
        raise ValueError(f"{delta_dir}: the delta was made against other base weights than {base} "
                         f"({'missing ' + ', '.join(missing[:3]) if missing else 'fingerprint differs'})")
    model: dict[str, torch.Tensor] = {}
    for key, base_key in info["key_map"].items():
        if base_key is None:
            model[key] = parts[f"{key}:full"]
        elif f"{key}:up" in parts:
            update = parts[f"{key}:up"].double() @ parts[f"{key}:down"].double()
            model[key] = (plain[base_key].double() + update).float()
        elif f"{key}:delta" in parts:
            model[key] = (plain[base_key].double() + parts[f"{key}:delta"].double()).float()
        else:
            model[key] = plain[base_key].clone()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in _TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    base_config = json.loads((base / "config.json").read_text())
    for f in delta_dir.iterdir():
        if f.is_file() and f.name not in (DELTA_FILE, DELTA_INFO):
            shutil.copy2(f, out / f.name)
    config = json.loads((out / "config.json").read_text())
    config["vocab_size"] = base_config["vocab_size"]  # trained on a vocabulary-cut twin: the base's full table
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
