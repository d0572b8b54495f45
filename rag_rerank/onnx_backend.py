"""ONNX Runtime backend for CPUs: the same models, exported once and run without PyTorch's
per-operator overhead, optionally with int8 weights.

Why: on a small CPU machine (2 cores) PyTorch spends a large share of a reranking call outside
the matrix products, and fp32 weights make every product memory-bound. An ONNX graph run by
ONNX Runtime with dynamically quantised int8 weights (activations stay fp32, scaled per batch)
scores the same pairs about twice as fast on such a machine (bench/rerank_speed.py) - but
int8 moves the scores of e5-based models noticeably (activation outliers), so it is opt-in:
fp32 ONNX scores exactly like torch and is the default.

The exported graph is cached next to the weights (``<model>/onnx/``), or under the package cache
when the model directory is read-only, and rebuilt when the weights change. Export needs torch
(once); running needs only onnxruntime and numpy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["Task", "exported", "session"]
Task = Literal["classifier", "encoder"]  # sequence-classification logits | token embeddings
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
log = logging.getLogger("rag_rerank")
OPSET = 17


def _weights(model_dir: Path) -> list[Path]:
    found = sorted(p for pattern in ("*.safetensors", "*.bin") for p in model_dir.glob(pattern))
    if not found:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors or *.bin weights to export to ONNX")
    return found


# Bumped whenever the export or the quantisation changes, so older cached graphs are rebuilt.
EXPORT_VERSION = "torchscript-opset17-eager/ort-fused/qint8-per-channel"


def _stamp(model_dir: Path) -> dict:
    """What the export was made from: rebuilt when any weight file or the export itself changes."""
    return {"export": EXPORT_VERSION,
            "weights": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in _weights(model_dir)}}


def _cache_dir(model_dir: Path) -> Path:
    """``<model>/onnx`` where the model directory is writable, else a folder of the package cache."""
    beside = model_dir / "onnx"
    if os.access(model_dir, os.W_OK):
        return beside
    from .models import default_cache_dir

    key = hashlib.sha1(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return default_cache_dir() / "onnx" / f"{model_dir.name}-{key}"


def exported(model_dir: str | os.PathLike, task: Task, *, quantize: bool = False) -> Path:
    """The ONNX file of ``model_dir`` for ``task`` (int8 weights when ``quantize``), exported on
    first use and reused while the weights are unchanged."""
    model_dir = Path(model_dir)
    folder = _cache_dir(model_dir)
    target = folder / f"{task}{'.int8' if quantize else ''}.onnx"
    stamp_file = target.with_suffix(".json")
    stamp = _stamp(model_dir)
    try:
        if target.exists() and json.loads(stamp_file.read_text()) == stamp:
            return target
    except (OSError, ValueError):
        pass  # no or damaged stamp: export again
    folder.mkdir(parents=True, exist_ok=True)
    # Build in a temp dir and rename: a concurrent or interrupted export never leaves half a graph.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", dir=folder))
    try:
        plain = tmp / "model.onnx"
        _export(model_dir, task, plain)
        made = _fused(model_dir, plain, tmp / "model.fused.onnx")
        if quantize:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = tmp / "model.int8.onnx"
            # per channel: one scale per output column; on e5 it keeps logits closer to fp32
            # (correlation 0.92 vs 0.86 per tensor, bench/results/speed_cpu) at the same speed.
            # The fused operators (com.microsoft domain) carry no inferred output types: say float.
            quantize_dynamic(str(made), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            made = quantized
        os.replace(made, target)
        stamp_file.write_text(json.dumps(stamp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fused(model_dir: Path, plain: Path, out: Path) -> Path:
    """The graph with ONNX Runtime's transformer fusions (one Attention, SkipLayerNorm and BiasGelu
    operator each where the export has a dozen small ones): on 2 cores the e5 reranker ran 1.1x
    faster in fp32 and 1.9x faster in int8 than unfused (bench/results/speed_cpu). Falls back to
    the plain graph for architectures the optimizer does not know."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    if config.model_type not in _FUSABLE:
        return plain
    try:
        from onnxruntime.transformers import optimizer

        model = optimizer.optimize_model(str(plain), model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size, opt_level=1, use_gpu=False)
        model.save_model_to_file(str(out))
    except Exception as exc:  # an optimizer failure costs speed, never the export
        log.warning("ONNX Runtime's transformer fusion failed for %s (%s): using the unfused graph", model_dir, exc)
        return plain
    return out


# BERT-like encoders whose exported attention ONNX Runtime's "bert" optimizer fuses (XLM-R: e5)
_FUSABLE = {"bert", "xlm-roberta", "roberta", "albert", "electra"}


def _export(model_dir: Path, task: Task, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    loader = AutoModelForSequenceClassification if task == "classifier" else AutoModel
    # eager attention: its exported graph is the pattern ONNX Runtime fuses into one Attention
    # operator; the SDPA export is neither fusable nor as fast (8.8 vs 12.3 pairs/s unfused, 2 cores)
    net = loader.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager").eval()
    sample = tok(["질문 하나"], ["문서 하나"], return_tensors="pt")
    names = [k for k in INPUTS if k in sample]

    class Graph(torch.nn.Module):  # named inputs in, one tensor out
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args):
            out = self.net(**dict(zip(names, args)))
            return out.logits if task == "classifier" else out.last_hidden_state

    output = "logits" if task == "classifier" else "last_hidden_state"
    axes = {k: {0: "batch", 1: "tokens"} for k in names}
    axes[output] = {0: "batch"} if task == "classifier" else {0: "batch", 1: "tokens"}
    with torch.inference_mode():
        # The TorchScript exporter: the dynamo one needs onnxscript and gains nothing for these graphs.
        torch.onnx.export(Graph(), tuple(sample[k] for k in names), str(out), dynamo=False, input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET)


def session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` = intra-op threads (default: ONNX Runtime's, one
    per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, batch: dict) -> np.ndarray:
    """Run ``sess`` on a tokenizer's numpy batch (only the inputs the graph takes, as int64)."""
    wanted = [i.name for i in sess.get_inputs()]
    return sess.run(None, {k: np.asarray(batch[k], dtype=np.int64) for k in wanted})[0]
