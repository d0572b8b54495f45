"""CUDA graphs of packed passes: a pass launched as one recorded graph instead of op by op.

Why: an e5-small pass over one question's 50 passages (~14k tokens) is a few hundred small kernels;
launched one by one from Python the GPU waits on the host (H200: ~10 ms a pass eager, ~6 ms
compiled, for well under a millisecond of arithmetic). A graph replays them all in one launch.

A graph is recorded for one shape, so passes are first grown to a bucket shape
(:func:`rag_rerank.packed.bucket`: a few shapes serve every pass) and a graph is recorded the first
time a bucket is met: two warm-up passes (where a compiled model compiles), the recording, and a
check that the replay gives the warm-up pass's logits; a bucket that cannot be recorded (a model
whose forward syncs with the host) or does not match turns graphs off with a warning and the pass
runs eagerly. Graphs share one memory pool: the passes run one after another on one stream, and
each replay's logits are copied out before the next replay may reuse that memory.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from ...models.devices import staged
from .packed import bucket

__all__ = ["PackedGraphs"]


class PackedGraphs:
    """Replays recorded graphs of ``model``'s packed passes on a CUDA device.

    ``max_graphs``: buckets recorded at most; passes of further shapes run eagerly (a graph keeps its
    inputs and outputs; the pool's activations are shared). Thread-safe: copying a pass's inputs,
    replaying and copying its logits out happen under one lock.
    """

    def __init__(self, model, device: torch.device, *, pad_id: int, position_offset: int, max_length: int,
                 max_graphs: int = 96) -> None:
        self.model, self.device = model, device
        self.pad_id, self.position_offset, self.max_length = pad_id, position_offset, max_length
        self.max_graphs = max_graphs
        self.enabled = True
        self._graphs: dict[tuple[int, int], tuple[object, dict, torch.Tensor]] = {}
        self._pool = None  # the graphs' shared memory pool, made at the first recording
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._graphs)

    def __call__(self, arrays: dict) -> torch.Tensor | None:
        """The logits ``[pairs, labels]`` of one packed pass (numpy ``arrays`` from
        :func:`rag_rerank.packed.inputs`), still on the device; None where the caller must run it eagerly."""
        if not self.enabled:
            return None
        pairs = len(arrays["cu_seq_lens_q"]) - 1
        grown = bucket(arrays, self.pad_id, self.position_offset, self.max_length)
        key = (grown["input_ids"].shape[1], len(grown["cu_seq_lens_q"]))
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                if len(self._graphs) >= self.max_graphs:
                    return None
                entry = self._record(key, grown)
                if entry is None:
                    return None
            graph, inputs, logits = entry
            for name, static in inputs.items():
                static.copy_(staged(grown[name], self.device), non_blocking=True)
            graph.replay()
            return logits[:pairs].clone()  # queued before any later replay overwrites the pool

    def _record(self, key, grown: dict):
        """Records ``grown``'s bucket, checks the replay against an eager pass; None (graphs off) on failure."""
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in grown.items() if isinstance(v, np.ndarray)}
        ints = {k: v for k, v in grown.items() if not isinstance(v, np.ndarray)}  # fixed by the bucket
        try:
            want, graph, logits = self._capture(lambda: self.model(**inputs, **ints).logits)
            graph.replay()
            pairs = int(np.count_nonzero(np.diff(grown["cu_seq_lens_q"])))  # real and pad pairs, not empty ones
            if not torch.allclose(logits[:pairs].float(), want[:pairs].float(), rtol=1e-3, atol=1e-3):
                raise RuntimeError("the replayed graph's logits differ from the same pass run eagerly")
        except Exception as exc:  # noqa: BLE001 - any failure: this model runs eagerly from now on
            self.enabled = False
            warnings.warn(f"CUDA graphs turned off for this model ({exc}); passes run eagerly", stacklevel=3)
            return None
        self._graphs[key] = entry = (graph, inputs, logits)
        return entry

    def _capture(self, run):
        """(an eager pass's logits, the graph, its output) for ``run``, a pass over the static inputs."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # cuBLAS workspaces, autotuning and compiling happen here, not in the graph
                want = run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = run()
        return want, graph, logits
