"""Session 14 probe 3: long passages cut before single spaces, so the tokenizer's threads share them
evenly (a 1,300-token passage tokenised alone is the longest task of the call's dispatch): ids checked
equal to whole-text encoding, then the 1 x 50 call's p50 cold, A/B interleaved (A: as shipped, B: cut).
argv: model dir, candidates (.jsonl.gz), corpus."""
import statistics
import sys
import time

import numpy as np
import torch

from rag_rerank import Reranker
from rag_rerank.pairs import PairEncoder

model_dir, cand, corpus = sys.argv[1:4]
sys.path.insert(0, "bench")
from rerank_speed import saved  # noqa: E402

questions, _, candidates, _ = saved(cand, corpus, 120, 50)
CUT = 600  # characters a segment, about 330 KorQuAD tokens


def cut_points(t):
    out, start = [], 0
    while len(t) - start > 2 * CUT:
        k = t.find(" ", start + CUT)
        while 0 < k < len(t) - 1 and (t[k - 1].isspace() or t[k + 1].isspace()):
            k = t.find(" ", k + 1)
        if k < 0 or len(t) - k < CUT // 2:
            break
        out.append(k); start = k
    return out


def cut_encode(self, texts):
    segs, counts = [], []
    for t in texts:
        ks = cut_points(t)
        bounds = [0, *ks, len(t)]
        segs += [t[a:b] for a, b in zip(bounds, bounds[1:])]
        counts.append(len(bounds) - 1)
    enc = [np.asarray(e.ids, dtype=np.int32) for e in self.backend.encode_batch_fast(segs, add_special_tokens=False)]
    out, i = [], 0
    for n in counts:
        out.append(enc[i] if n == 1 else np.concatenate(enc[i:i + n])); i += n
    return out


plain_encode = PairEncoder.encode
r = Reranker(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
texts = sorted({d for docs in candidates for d in docs})
whole = plain_encode(r._pairs, texts)
cut = cut_encode(r._pairs, texts)
n_cut = sum(1 for t in texts if cut_points(t))
print(f"{len(texts)} passages, {n_cut} cut; ids equal: {all(np.array_equal(a, b) for a, b in zip(whole, cut))}", flush=True)
q, docs = questions[0], candidates[0]
sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def p50(n=60):
    ts = []
    for _ in range(n):
        r.token_cache.clear(); sync(); t = time.perf_counter(); r.score(q, docs); ts.append(1000 * (time.perf_counter() - t))
    ts.sort()
    return statistics.median(ts), ts[int(0.95 * n) - 1]


for _ in range(5):
    r.score(q, docs)
res = {"A": [], "B": []}
for rnd in range(4):
    for name in ("A", "B"):
        PairEncoder.encode = plain_encode if name == "A" else cut_encode
        res[name].append(p50())
for name, v in res.items():
    print(name, "p50s", " ".join(f"{a:.2f}" for a, _ in v), "| p95s", " ".join(f"{b:.2f}" for _, b in v), flush=True)
# other questions' calls (each its own 50 passages), cold, A vs B
for name in ("A", "B", "A", "B"):
    PairEncoder.encode = plain_encode if name == "A" else cut_encode
    ts = []
    for qq, dd in zip(questions[:60], candidates[:60]):
        r.token_cache.clear(); sync(); t = time.perf_counter(); r.score(qq, dd); ts.append(1000 * (time.perf_counter() - t))
    print(f"{name}: 60 questions' calls, cold: p50 {statistics.median(ts):.2f} ms, p95 {sorted(ts)[56]:.2f}", flush=True)
