"""CUDA graphs of packed passes (rag_rerank.reranker.engine.graphs), without a GPU: the recording is replaced by a
"graph" that re-runs the recorded pass on its static inputs, so what is tested is what the class
itself does: buckets, copying each pass's inputs in, one recording per bucket, the real pairs'
logits out, and turning itself off when a replay disagrees with the eager pass."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rag_rerank.reranker.engine.graphs import PackedGraphs
from rag_rerank.reranker.engine.packed import inputs


class _PairSums(torch.nn.Module):
    """A stand-in model: each pair's logit is a weighted sum of its ids and positions, read through the
    pair boundaries the way the packed attention reads them (device tensors, not host ints)."""

    def forward(self, input_ids, position_ids, cu_seq_lens_q, max_length_q, **_):
        values = (input_ids[0] * (position_ids[0] + 1)).double().cumsum(0)
        values = torch.cat([values.new_zeros(1), values])
        cu = cu_seq_lens_q.long()
        return SimpleNamespace(logits=(values[cu[1:]] - values[cu[:-1]]).float()[:, None])


class _Replay:
    def __init__(self, run, out):
        self.run, self.out, self.replays = run, out, 0

    def replay(self):
        self.replays += 1
        self.out.copy_(self.run())


class _CPUGraphs(PackedGraphs):
    recordings = 0

    def _capture(self, run):
        type(self).recordings += 1
        want, out = run(), run().clone()
        return want, _Replay(run, out), out


def _pass(lengths, seed):
    rng = np.random.default_rng(seed)
    return inputs([rng.integers(5, 100, n) for n in lengths], None, offset=2, spans=False)


def test_a_bucket_is_recorded_once_and_replays_each_pass_on_its_own_inputs():
    model, _CPUGraphs.recordings = _PairSums(), 0
    graphs = _CPUGraphs(model, torch.device("cpu"), pad_id=1, position_offset=2, max_length=512)
    passes = [_pass([300, 200, 100], 0), _pass([290, 210, 101], 1), _pass([40] * 30, 2), _pass([300, 201, 99], 3)]
    for arrays in passes:
        got = graphs(arrays)
        want = model(**{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}).logits
        assert got.shape == want.shape and torch.equal(got, want)  # the real pairs only, these inputs' logits
    assert len(graphs) == 2 and _CPUGraphs.recordings == 2  # passes 0, 1 and 3 share a bucket (~600 tokens, 3 pairs)
    out = graphs(passes[0])
    graphs(passes[2])
    assert torch.equal(out, graphs(passes[0]))  # a returned result is a copy: later replays do not touch it


def test_graphs_turn_off_when_a_replay_disagrees_and_cap_their_number():
    class Drifting(_PairSums):
        calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * self.calls  # every pass differs: a graph that would not replay faithfully
            return out

    graphs = _CPUGraphs(Drifting(), torch.device("cpu"), pad_id=1, position_offset=2, max_length=512)
    with pytest.warns(UserWarning, match="CUDA graphs turned off"):
        assert graphs(_pass([100, 50], 0)) is None
    assert not graphs.enabled and graphs(_pass([100, 50], 1)) is None and len(graphs) == 0

    capped = _CPUGraphs(_PairSums(), torch.device("cpu"), pad_id=1, position_offset=2, max_length=512, max_graphs=1)
    assert capped(_pass([100], 0)) is not None
    assert capped(_pass([2000, 500, 500], 1)) is None and len(capped) == 1  # a new shape beyond the cap: eager
    assert capped(_pass([101], 2)) is not None  # the recorded bucket still replays
