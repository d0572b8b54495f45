"""Session 13 probe: why one question x 50 passages takes 7-8 ms to tokenise on the device host
(3.6 ms on a 2-core CPU here), and what tokenises them faster. Run with the e5 tokenizer dir as argv[1]."""
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from transformers import AutoTokenizer

path, corpus = sys.argv[1], sys.argv[2]
docs = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")][:50]
base = AutoTokenizer.from_pretrained(path)


def fresh():
    t = AutoTokenizer.from_pretrained(path).backend_tokenizer
    t.no_truncation(); t.no_padding()
    return t


def med(f, n=40):
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


tok = fresh()
print("affinity", len(os.sched_getaffinity(0)), "cpu.max", open("/sys/fs/cgroup/cpu.max").read().strip()
      if os.path.exists("/sys/fs/cgroup/cpu.max") else "-", "RAYON", os.environ.get("RAYON_NUM_THREADS"), flush=True)
print(f"loop encode: {med(lambda: [tok.encode(d, add_special_tokens=False) for d in docs]):.2f} ms")
print(f"encode_batch_fast(50): {med(lambda: tok.encode_batch_fast(docs, add_special_tokens=False)):.2f} ms")
for k in (2, 4, 8):
    toks = [fresh() for _ in range(k)]
    parts = [docs[i::k] for i in range(k)]
    pool = ThreadPoolExecutor(k)
    f = lambda: list(pool.map(lambda tp: tp[0].encode_batch_fast(tp[1], add_special_tokens=False), zip(toks, parts)))  # noqa: E731
    g = lambda: list(pool.map(lambda tp: [tp[0].encode(d, add_special_tokens=False) for d in tp[1]], zip(toks, parts)))  # noqa: E731
    print(f"{k} python threads, encode_batch_fast each: {med(f):.2f} ms; loop each: {med(g):.2f} ms")
    pool.shutdown()
if "--torch" in sys.argv:
    import torch
    x = torch.randn(4096, 4096, device="cuda")
    for _ in range(10):
        x @ x
    torch.cuda.synchronize()
    torch.randn(2000, 2000) @ torch.randn(2000, 2000)  # wake torch's CPU OpenMP pool
    print(f"after torch CUDA + a CPU matmul, encode_batch_fast(50): "
          f"{med(lambda: tok.encode_batch_fast(docs, add_special_tokens=False)):.2f} ms", flush=True)
