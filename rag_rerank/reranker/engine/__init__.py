"""The reranker's engines: one seam between the windows a ``Reranker`` cuts and the logits of a model.

A ``Reranker`` owns what is scored (inputs, windows of long documents, aggregation, threads); an engine
owns how passes run. Every engine answers three calls:

* ``plan(lengths)``: the windows' indices cut into passes (longest first, at most ``batch_size x
  max_length`` tokens a pass: padded, longest x pairs; packed, the real tokens summed);
* ``run(pairs, windows)``: builds each pass's batch in its own format and queues it, returning the
  windows' order and one value a window, left on the device until the caller reads them (the host
  waits once a call, not once a pass);
* ``describe()``: what it is, as a dict (bench rows, logs and tests read this, not private attributes).

Engines (TEI keeps one runtime a folder; here each is one class):

* :class:`PaddedEngine`: a torch model, right-padded passes (any architecture);
* :class:`PackedEngine`: a torch model of a family whose code allows padding-free passes (``packed``),
  replayed from recorded CUDA graphs on a GPU (``graphs``), with the ``cuda/`` kernels where they pay;
* :class:`ExportedEngine`: the model exported to ONNX, run by ONNX Runtime or OpenVINO (``models.export``).

The speed switches that pick among them are one object, :class:`EngineSettings`; ``load_engine`` builds
the engine a model, a device and those settings call for.
"""
from __future__ import annotations

import abc
import dataclasses
import warnings
from typing import Sequence

import numpy as np
import torch

from ...models.devices import resolve_dtype, staged
from ...types import check_int

__all__ = ["Engine", "EngineSettings", "ExportedEngine", "PackedEngine", "PaddedEngine", "load_engine",
           "torch_engine"]


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """How a reranker's passes run; none of these changes what a pass computes beyond its precision.

    Args:
        batch_size: pairs per pass at full length: a pass holds at most ``batch_size x max_length``
            tokens, so shorter pairs are packed more to a pass. Default 64 on CUDA (on an H200 an
            e5-small ran 64 x 512-token passes 17 % faster than 128 and as fast as 32-48:
            bench/rerank_speed.py, BENCHMARKS.md session 13), 32 elsewhere.
        quantize: with ``backend="onnx"``, int8 weights (dynamic quantisation, per channel): about 1.6x
            faster again on 2 cores, but scores move (check the ranking on your data); default fp32.
        threads: with a CPU backend, its intra-op threads (default: one per core).
        compile: with ``backend="torch"``, the model through ``torch.compile(dynamic=True)`` (compiling
            costs tens of seconds at load, so it is off by default); a string names another backend.
        pack: with ``backend="torch"``, padding-free passes for the families whose code allows it (BERT,
            ALBERT, ELECTRA, RoBERTa, XLM-R, CamemBERT), on the CPU and on CUDA in fp16/bf16 (the varlen
            flash kernel); elsewhere passes are padded whatever this says.
        cuda_graphs: with packed passes on CUDA, each pass replayed as a recorded CUDA graph (checked
            against an eager pass when recorded); ignored elsewhere.
        fused_ffn: on CUDA in fp16/bf16, each feed-forward's bias + GELU as its matrix multiply's epilogue
            (cuBLASLt; tanh GELU: exact for ``gelu_new``, within ~5e-4 an activation of exact GELU).
        fused_norm: where passes replay CUDA graphs (and no ``compile``), residual add + LayerNorm as one
            Triton kernel (1.02-1.17x on an H200, BENCHMARKS.md session 15).
    """

    batch_size: int | None = None
    quantize: bool = False
    threads: int | None = None
    compile: bool | str = False
    pack: bool = True
    cuda_graphs: bool = True
    fused_ffn: bool = True
    fused_norm: bool = True

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        if self.threads is not None:
            object.__setattr__(self, "threads", check_int(self.threads, "threads", minimum=1))
        for name in ("quantize", "pack", "cuda_graphs", "fused_ffn", "fused_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.compile, (bool, str)):
            raise ValueError(f"compile must be True, False or a torch.compile backend name, got {self.compile!r}")

    @classmethod
    def of(cls, settings: "EngineSettings | None", **switches) -> "EngineSettings":
        """``settings`` with ``switches`` (keyword arguments of the same names) laid over it; an unknown
        name is refused naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(switches) - known)
        if unknown:
            raise TypeError(f"unknown engine setting {unknown[0]!r}; the settings are {sorted(known)}")
        if settings is not None and not isinstance(settings, cls):
            raise TypeError(f"engine must be an EngineSettings, got {type(settings).__name__}")
        return dataclasses.replace(settings or cls(), **switches)


class Engine(abc.ABC):
    """The seam: ``plan`` / ``run`` / ``describe`` (module docstring). Each engine builds a pass's batch
    (``batch``) and runs it (``forward``: logits ``[pairs, labels]``, on the device)."""

    name = "engine"
    packed = False  # passes sized by real tokens (True) or by longest x pairs

    def __init__(self, *, batch_size: int, max_length: int, num_labels: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.batch_size, self.max_length, self.num_labels = batch_size, max_length, num_labels
        self.device, self.dtype = device, dtype
        self.model = None  # the torch module, where the engine runs one

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices longest first, cut into passes of at most ``batch_size x max_length`` tokens: long
        pairs get ``batch_size`` to a pass, short ones more."""
        budget = self.batch_size * self.max_length
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        passes, current, total = [], [], 0
        for i in order:
            longest = lengths[current[0]] if current else lengths[i]
            tokens = total + lengths[i] if self.packed else (len(current) + 1) * longest
            if current and tokens > budget:
                passes.append(current)
                current, total = [], 0
            current.append(i)
            total += lengths[i]
        return passes + [current] if current else passes

    @abc.abstractmethod
    def batch(self, pairs, windows, idx: list[int]) -> dict:
        """Windows ``idx`` of ``windows`` as this engine's inputs for one pass."""

    @abc.abstractmethod
    def forward(self, batch: dict) -> torch.Tensor:
        """One pass's logits ``[pairs, labels]``, left on the device."""

    @torch.inference_mode()
    def run(self, pairs, windows) -> tuple[list[int], torch.Tensor | None]:
        """Queues every pass of ``windows``: (window order of the values, one value per window, left on
        the device): the logit, or for two classes the relevant-minus-other margin."""
        if not len(windows):
            return [], None
        passes = self.plan(pairs.lengths(windows))
        outs = []
        for idx in passes:
            out = self.forward(self.batch(pairs, windows, idx))
            outs.append(out[:, 0] if self.num_labels == 1 else out[:, 1] - out[:, 0])
        return [i for idx in passes for i in idx], torch.cat(outs)

    def describe(self) -> dict:
        return {"engine": self.name, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "batch_size": self.batch_size, "max_length": self.max_length}


class PaddedEngine(Engine):
    """A torch model, right-padded passes of length-sorted pairs."""

    name = "padded"

    def __init__(self, model, *, compiled: bool | str = False, fused_ffn: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.model, self.compiled, self.fused_ffn = model, compiled, fused_ffn

    def batch(self, pairs, windows, idx):
        return pairs.pad(windows, idx)

    def forward(self, batch):
        return self.model(**self.to_device(batch)).logits

    def to_device(self, arrays: dict) -> dict:
        """Arrays to the model's device, pinned + non_blocking on CUDA: the copy overlaps the previous pass.
        Host values (lengths, spans) stay as they are."""
        cuda = self.device.type == "cuda"
        return {k: staged(v, self.device).to(self.device, non_blocking=cuda) if isinstance(v, np.ndarray) else v
                for k, v in arrays.items()}

    def describe(self):
        return {**super().describe(), "compile": self.compiled, "fused_ffn": self.fused_ffn}


class PackedEngine(PaddedEngine):
    """A torch model, padding-free passes (``packed``): one row of the pairs' real tokens, attention kept
    within each pair; on CUDA (flash kernel) each pass replayed from a recorded graph (``graphs``)."""

    name = "packed"
    packed = True

    def __init__(self, model, *, position_offset: int, host_spans: bool, graphs=None, fused_norms: int = 0,
                 **kw) -> None:
        super().__init__(model, **kw)
        self.position_offset, self.host_spans = position_offset, host_spans
        self.graphs, self.fused_norms = graphs, fused_norms

    def batch(self, pairs, windows, idx):
        """The pairs' ids (and token types) as one packed row (:func:`packed.inputs`)."""
        from .packed import inputs

        types = [pairs.types(windows, k) for k in idx] if pairs.with_types else None
        return inputs([pairs.ids(windows, k) for k in idx], types, self.position_offset, self.host_spans)

    def forward(self, batch):
        out = self.graphs(batch) if self.graphs is not None else None  # None: not recorded, run eagerly
        return self.model(**self.to_device(batch)).logits if out is None else out

    def describe(self):
        graphs = self.graphs is not None and self.graphs.enabled
        return {**super().describe(), "flash": not self.host_spans, "cuda_graphs": len(self.graphs) if graphs else None,
                "fused_norms": self.fused_norms}


class ExportedEngine(Engine):
    """The model exported to ONNX, run by ONNX Runtime or OpenVINO on the CPU (``models.export.load``):
    padded passes in numpy."""

    name = "exported"

    def __init__(self, graph, runtime: str, **kw) -> None:
        super().__init__(**kw)
        self.graph, self.runtime = graph, runtime

    def batch(self, pairs, windows, idx):
        return pairs.pad(windows, idx)

    def forward(self, batch):
        return torch.from_numpy(self.graph(batch))

    def describe(self):
        return {**super().describe(), "runtime": self.runtime, "precision": self.graph.precision}


def torch_engine(model, config, settings: EngineSettings, *, device: torch.device, dtype: torch.dtype,
                 max_length: int, pad_id: int, num_labels: int) -> Engine:
    """The torch engine ``settings`` call for on ``device``: packed where the family allows it and it pays
    (``packed.enable``), the FFN epilogue and add + LayerNorm kernels where they pay, graphs on CUDA."""
    from ...models.devices import cpu_has_bf16_units
    from ..cuda import add_norm, fused
    from . import packed

    if device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_bf16_units() is False:
        warnings.warn("dtype=bf16 on a CPU without bf16 units (no AVX512-BF16 / AMX): torch emulates it, several "
                      "times slower than fp32 here; use dtype='fp32', or backend='openvino', which picks fp32 on such "
                      "a CPU", stacklevel=5)  # the caller of Reranker()
    half = dtype in (torch.float16, torch.bfloat16)
    fused_ffn = int(settings.fused_ffn and device.type == "cuda" and half and packed.supports(config)
                    and fused.enable(model))
    is_packed = settings.pack and packed.enable(model, device, dtype)
    if is_packed:
        host_spans = not packed.uses_flash(model, device, dtype)
    if settings.compile:
        model = torch.compile(model, dynamic=True,
                              backend=settings.compile if isinstance(settings.compile, str) else "inductor")
    common = dict(compiled=settings.compile, fused_ffn=fused_ffn, batch_size=settings.batch_size or (
        64 if device.type == "cuda" else 32), max_length=max_length, num_labels=num_labels, device=device, dtype=dtype)
    if not is_packed:
        return PaddedEngine(model, **common)
    offset, graphs, norms = packed.position_offset(config), None, 0
    if settings.cuda_graphs and device.type == "cuda" and not host_spans:
        from .graphs import PackedGraphs

        graphs = PackedGraphs(model, device, pad_id=pad_id, position_offset=offset, max_length=max_length)
        # only where passes replay graphs: Triton's launcher takes ~35 us of host time a launch (H200), and
        # passes launched op by op already wait on the host (bench/results/speed_h200_s15)
        norms = int(settings.fused_norm and not settings.compile and add_norm.available() and add_norm.enable(model))
    return PackedEngine(model, position_offset=offset, host_spans=host_spans, graphs=graphs, fused_norms=norms,
                        **common)


def load_torch_model(path, config, dtype: torch.dtype, device: torch.device, trust_remote_code: bool, name: str):
    """``AutoModelForSequenceClassification`` from ``path`` with the checks a reranker needs: weights that
    load, that belong to this config, and a warning where the head is new (random scores)."""
    from transformers import AutoModelForSequenceClassification

    try:
        net, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as exc:  # OSError, ValueError, safetensors' own error for a truncated or empty file
        raise ValueError(f"{path}: the weights could not be loaded ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); is the weights file complete?") from exc
    missing = [k for k in info.get("missing_keys", []) if not ("classifier" in k or "score" in k)]
    if missing:
        raise ValueError(f"{path}: config.json describes a {config.model_type!r} model, but the weights "
                         f"lack {len(missing)} of its tensors (first: {missing[0]}): the config and the "
                         "weights belong to different models (loading would score with random weights)")
    fresh = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k]
    if fresh:
        warnings.warn(f"{name}: no trained classification head ({', '.join(fresh)} newly "
                      "initialised); its scores are random until it is fine-tuned",
                      stacklevel=5)  # the caller of Reranker()
    return net.to(device).eval()


def _warn_untrained_head(path, name: str) -> None:
    """The torch load's warning for an exported graph: a checkpoint with no classification head (a bi-encoder,
    a base model) was exported with a random one and scored at random in silence - the CPU default's path."""
    from ...models import HEADS, has_head

    if has_head(path) is False:
        warnings.warn(f"{name}: no trained classification head in its weights (no {' / '.join(HEADS)} tensors: a "
                      "bi-encoder or a base model?); its scores are random until it is fine-tuned", stacklevel=5)


def load_engine(path, config, settings: EngineSettings, *, backend: str, device: torch.device,
                dtype: torch.dtype | None, max_length: int, pad_id: int, num_labels: int, trust_remote_code: bool,
                name: str) -> Engine:
    """The engine for ``backend`` ("torch", or a CPU runtime "onnx" / "openvino"): the exported graph loaded
    (exported once, cached beside the weights) or the torch model loaded and set up by :func:`torch_engine`.
    A CPU runtime's load failure propagates (the caller decides whether torch stands in)."""
    from ...models import export

    if backend in export.CPU_BACKENDS:
        _warn_untrained_head(path, name)
        graph = export.load(path, "classifier", backend, quantize=settings.quantize, threads=settings.threads,
                            dtype=dtype)
        return ExportedEngine(graph, backend, batch_size=settings.batch_size or 32, max_length=max_length,
                              num_labels=num_labels, device=device, dtype=resolve_dtype(graph.computes_in, device))
    model = load_torch_model(path, config, dtype, device, trust_remote_code, name)
    return torch_engine(model, config, settings, device=device, dtype=dtype, max_length=max_length, pad_id=pad_id,
                        num_labels=num_labels)
