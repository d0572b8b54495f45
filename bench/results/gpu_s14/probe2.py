"""Session 14 probe 2: the 1 x 50 call's host launch cost by part (bucket, staging copies, replay,
clone), the worker's tokenising by part, the device time of one pass against its pair count, a
kernel profile of a 17-pair pass, and the call with every passage's ids already known (warm).
argv: model dir, candidates (.jsonl.gz), corpus."""
import statistics
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import torch

import rag_rerank.graphs as graphs_mod
from rag_rerank import Reranker, packed

model_dir, cand, corpus = sys.argv[1:4]
sys.path.insert(0, "bench")
from rerank_speed import saved  # noqa: E402

questions, _, candidates, _ = saved(cand, corpus, 120, 50)
q, docs = questions[0], candidates[0]
r = Reranker(model_dir, device="cuda")
score = lambda: r.score(q, docs)  # noqa: E731
for _ in range(10):
    score()

parts = defaultdict(list)


def timed_part(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter(); out = fn(*a, **k); parts[name].append(1000 * (time.perf_counter() - t)); return out
    return wrapper


o_bucket, o_staged, o_replay = graphs_mod.bucket, graphs_mod.staged, torch.cuda.CUDAGraph.replay
o_pack, o_encode, o_windows = r._pairs.pack, r._pairs.encode, None
graphs_mod.bucket = timed_part("bucket", o_bucket)
graphs_mod.staged = timed_part("staged (pin)", o_staged)
torch.cuda.CUDAGraph.replay = timed_part("replay", o_replay)
o_copy = torch.Tensor.copy_
o_call = type(r._graphs).__call__
type(r._graphs).__call__ = timed_part("graphs() whole", o_call)
o_launch = r._launch
r._launch = timed_part("_launch whole", o_launch)
o_tok = r._tokenize_chunk
r._tokenize_chunk = timed_part("_tokenize_chunk", o_tok)
o_collect = r._collect
r._collect = timed_part("_collect", o_collect)
for _ in range(40):
    torch.cuda.synchronize(); score()
for name, v in parts.items():
    print(f"{name}: median {statistics.median(v):.3f} ms, {len(v) / 40:.1f} a call", flush=True)
graphs_mod.bucket, graphs_mod.staged, torch.cuda.CUDAGraph.replay = o_bucket, o_staged, o_replay
type(r._graphs).__call__ = o_call
r._launch, r._tokenize_chunk, r._collect = o_launch, o_tok, o_collect

# worker tokenising by part, in the worker thread while the call runs
tparts = defaultdict(list)
pairs = r._pairs
be = pairs.backend
o_ebf = type(be).encode_batch_fast


def enc(texts):
    t = time.perf_counter(); e = be.encode_batch_fast(list(texts), add_special_tokens=False)
    t2 = time.perf_counter(); out = [np.asarray(x.ids, dtype=np.int64) for x in e]; t3 = time.perf_counter()
    tparts["rust encode"].append(1000 * (t2 - t)); tparts["ids -> numpy"].append(1000 * (t3 - t2)); return out


pairs.encode = enc
for _ in range(40):
    torch.cuda.synchronize(); score()
for name, v in tparts.items():
    print(f"in the call, {name}: median {statistics.median(v):.3f} ms a piece", flush=True)
t_alone = []
for _ in range(40):
    t = time.perf_counter(); be.encode_batch_fast([q] + docs[:17], add_special_tokens=False); t_alone.append(1000 * (time.perf_counter() - t))
print(f"alone, rust encode of 18 texts: {statistics.median(t_alone):.3f} ms", flush=True)
del pairs.encode

# device time of one pass against pairs (graph replays)
for n in (4, 8, 12, 17, 25, 34, 50):
    w = r._tokenize_chunk([(0, 0, q, docs[:n])])
    r._forward(w)
    ts = []
    for _ in range(30):
        torch.cuda.synchronize()
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); order, vals = r._launch(w); b.record(); t = time.perf_counter(); r._collect(order, vals)
        ts.append(a.elapsed_time(b))
    tokens = sum(pairs.lengths(w))
    print(f"{n} passages ({len(w)} windows, {tokens} tokens): device {statistics.median(ts):.3f} ms", flush=True)

# warm: every passage's ids known (a dict in front of encode)
cache = {}


def cached(texts):
    miss = [t for t in texts if t not in cache]
    if miss:
        for t, ids in zip(miss, o_encode(miss)):
            cache[t] = ids
    return [cache[t] for t in texts]


def p50(f, n=100):
    for _ in range(5):
        f()
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t = time.perf_counter(); f(); ts.append(1000 * (time.perf_counter() - t))
    ts.sort()
    return f"p50 {statistics.median(ts):.2f} p95 {ts[94]:.2f}"


print("cold (default):", p50(score), flush=True)
pairs.encode = cached
print("warm, 3 pieces:", p50(score), flush=True)
r._split_small_calls = False
print("warm, 1 piece:", p50(score), flush=True)
del pairs.encode
print("cold, 1 piece:", p50(score), flush=True)
r._split_small_calls = True

# kernels of one 17-pair pass, eager
w = r._tokenize_chunk([(0, 0, q, docs[:17])])
arrays = pairs.pack(w, list(range(len(w))), r._position_offset, r._host_spans)
dev = r._to_device(arrays)
with torch.inference_mode():
    for _ in range(3):
        r.model(**dev)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            r.model(**dev)
        torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=70), flush=True)

# experiment: query/key/value as one GEMM (three facades over one fused linear), no .contiguous() in attention
from torch import nn  # noqa: E402
from transformers import AttentionInterface  # noqa: E402


class _Shared:
    def __init__(self, q, k, v):
        self.weight = torch.cat([q.weight, k.weight, v.weight]).detach()
        self.bias = torch.cat([q.bias, k.bias, v.bias]).detach()
        self.size = q.out_features
        self.stash = None


class _Facade(nn.Module):
    def __init__(self, shared, i, own):
        super().__init__()
        self.shared, self.i, self.own = shared, i, own

    def forward(self, x):
        s = self.shared
        if self.i == 0:
            s.stash = (x, torch.nn.functional.linear(x, s.weight, s.bias))
        if s.stash is None or s.stash[0] is not x:
            return self.own(x)
        out = s.stash[1][..., self.i * s.size:(self.i + 1) * s.size]
        if self.i == 2:
            s.stash = None
        return out


def attention_nocopy(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                     cu_seq_lens_q=None, max_length_q=None, rag_rerank_spans=None, **kwargs):
    qq, kk, vv = (t[0].transpose(0, 1) for t in (query, key, value))
    return packed._varlen(qq, kk, vv, cu_seq_lens_q, max_length_q, scaling).unsqueeze(0), None


try:
    want = r.score(q, docs, raw=True)
    AttentionInterface.register(packed.ATTENTION, attention_nocopy)
    r._graphs._graphs.clear(); r._graphs._pool = None
    got = r.score(q, docs, raw=True)
    print("no .contiguous(): max |logit diff|", max(abs(a - b) for a, b in zip(want, got)), "cold", p50(score), flush=True)
    for mod in list(r.model.modules()):
        if type(mod).__name__.endswith("SelfAttention"):
            sh = _Shared(mod.query, mod.key, mod.value)
            mod.query, mod.key, mod.value = (_Facade(sh, i, own) for i, own in enumerate((mod.query, mod.key, mod.value)))
    r._graphs._graphs.clear(); r._graphs._pool = None
    got = r.score(q, docs, raw=True)
    print("fused qkv: max |logit diff|", max(abs(a - b) for a, b in zip(want, got)), "cold", p50(score), flush=True)
    for n in (17, 50):
        w = r._tokenize_chunk([(0, 0, q, docs[:n])])
        r._forward(w)
        ts = []
        for _ in range(30):
            torch.cuda.synchronize()
            a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
            a.record(); order, vals = r._launch(w); b.record(); r._collect(order, vals)
            ts.append(a.elapsed_time(b))
        print(f"fused qkv, {n} passages: device {statistics.median(ts):.3f} ms", flush=True)
except Exception as exc:  # noqa: BLE001
    import traceback; traceback.print_exc()
