"""Session 14 probe: where the 1 x 50 call's host time goes on the device host, in one process.
(1) tokenising the call's 51 texts: bare encode_batch_fast vs _tokenize_chunk, back to back, after a
5 ms sleep (the tokenizer's rayon threads asleep) and right after a score() call (as in the bench);
(2) long passages cut before a space (balanced over the tokenizer's threads; ids checked equal);
(3) a timeline of one score() call (host stamps + CUDA events per piece); (4) torch.set_num_threads(1).
argv: model dir, candidates (.jsonl.gz), corpus."""
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch

from rag_rerank import Reranker

model_dir, cand, corpus = sys.argv[1:4]
sys.path.insert(0, "bench")
from rerank_speed import saved  # noqa: E402

questions, _, candidates, _ = saved(cand, corpus, 120, 50)
q, docs = questions[0], candidates[0]
CUDA = torch.cuda.is_available()
r = Reranker(model_dir, device="cuda" if CUDA else "cpu")
sync = torch.cuda.synchronize if CUDA else (lambda: None)
tok = r._pairs.backend
texts = [q, *docs]
print("RAYON", os.environ.get("RAYON_NUM_THREADS"), "torch threads", torch.get_num_threads(), "batch", r.batch_size, flush=True)


def med(f, between=None, n=40):
    f()
    ts = []
    for _ in range(n):
        if between:
            between()
        t = time.perf_counter(); f(); ts.append(1000 * (time.perf_counter() - t))
    return f"{statistics.median(ts):.2f}"


def cut_encode(texts, piece=400):
    segs, owner = [], []
    for i, t in enumerate(texts):
        start = 0
        while len(t) - start > 1.5 * piece:
            k = t.find(" ", start + piece)
            if k < 0 or len(t) - k < piece // 2:
                break
            segs.append(t[start:k]); owner.append(i); start = k
        segs.append(t[start:]); owner.append(i)
    enc = tok.encode_batch_fast(segs, add_special_tokens=False)
    parts = [[] for _ in texts]
    for i, e in zip(owner, enc):
        parts[i].append(e.ids)
    return [np.asarray([x for p in ps for x in p], dtype=np.int64) for ps in parts]


whole = [np.asarray(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
for piece in (200, 400, 800):
    print("cut", piece, "equal ids:", all((a == b).all() and len(a) == len(b) for a, b in zip(whole, cut_encode(texts, piece))))
sleep = lambda: time.sleep(0.005)  # noqa: E731
score = lambda: r.score(q, docs)  # noqa: E731
chunk = [(0, 0, q, docs)]
bare = lambda: tok.encode_batch_fast(texts, add_special_tokens=False)  # noqa: E731
for name, f in (("bare", bare), ("_tokenize_chunk", lambda: r._tokenize_chunk(chunk)),
                ("cut400", lambda: cut_encode(texts, 400)), ("cut200", lambda: cut_encode(texts, 200)),
                ("bare 17 texts", lambda: tok.encode_batch_fast(texts[:17], add_special_tokens=False))):
    print(f"{name}: back to back {med(f)} ms, after 5 ms sleep {med(f, sleep)}, after score() {med(f, score)}", flush=True)


def p50(f, n=100):
    for _ in range(5):
        f()
    ts = []
    for _ in range(n):
        sync(); t = time.perf_counter(); f(); ts.append(1000 * (time.perf_counter() - t))
    ts.sort()
    return f"p50 {statistics.median(ts):.2f} p95 {ts[94]:.2f}"


print("score 1x50 default:", p50(score), flush=True)
orig_encode = r._pairs.encode
r._pairs.encode = lambda t: cut_encode(t, 400)
print("score 1x50 cut400:", p50(score), flush=True)
r._pairs.encode = orig_encode
for interval in (0.001, 0.0002):
    sys.setswitchinterval(interval)
    print(f"switch interval {interval}: score 1x50", p50(score), flush=True)
sys.setswitchinterval(0.005)

# timeline
T0 = [0.0]
stamps = []
events = []
ot, ol, oc = r._tokenize_chunk, r._launch, r._collect


def st(name):
    stamps.append((name, threading.current_thread().name[:8], 1000 * (time.perf_counter() - T0[0])))


def tk(c):
    st("tok>"); w = ot(c); st("tok<"); return w


def la(w):
    st("launch>")
    if not CUDA:
        out = ol(w); st("launch<"); return out
    a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
    a.record(); out = ol(w); b.record(); events.append((a, b)); st("launch<"); return out


def co(*a):
    st("collect>"); out = oc(*a); st("collect<"); return out


r._tokenize_chunk, r._launch, r._collect = tk, la, co
rows = []
for _ in range(30):
    stamps.clear(); events.clear()
    sync()
    start = torch.cuda.Event(enable_timing=True) if CUDA else None
    if CUDA:
        start.record()
    T0[0] = time.perf_counter(); r.score(q, docs); end_ms = 1000 * (time.perf_counter() - T0[0])
    sync()
    gpu = [(start.elapsed_time(a), a.elapsed_time(b)) for a, b in events]
    rows.append((end_ms, list(stamps), gpu))
rows.sort(key=lambda x: x[0])
for end_ms, s, gpu in rows[14:16]:
    print(f"call {end_ms:.2f} ms:", " ".join(f"{n}@{t:.2f}({th})" for n, th, t in s))
    print("   gpu (start offset, launch-span ms):", " ".join(f"({a:.2f},{b:.2f})" for a, b in gpu))
r._tokenize_chunk, r._launch, r._collect = ot, ol, oc
torch.set_num_threads(1)
print("torch threads 1: score 1x50", p50(score), "; bare after score", med(bare, score), flush=True)
