"""Session 12, levers for the next session (H200, shipped reranker, 40 questions x 50 = 2,000 pairs, one process):
the defaults; batch_size=64 (smaller passes); the FFN's GELU computed in the up-projection's GEMM epilogue
(torch._addmm_activation: cuBLASLt's GELU, the tanh form) instead of its own kernel (11 % of device time).
Each: the call's median wall time, the device time of its passes, and its logits against the defaults'."""
import json
import statistics
import time

import torch
import transformers.models.xlm_roberta.modeling_xlm_roberta as xlmr

from rag_rerank import Reranker

rows = [json.loads(line) for line in open(".gpu/work/korquad/test.jsonl", encoding="utf-8")][:40]
corpus = [json.loads(line)["text"] for line in open(".gpu/work/korquad/test_corpus.jsonl", encoding="utf-8")]
queries = [row["query"] for row in rows]
docs = [corpus[i : i + 50] for i in range(0, 40 * 13, 13)]
windows_of = lambda r: r._pairs.windows([(g, 0, q, d) for g, (q, d) in enumerate(zip(queries, docs))])  # noqa: E731


def measure(name, r, reference=None):
    for _ in range(2):
        got = r.score_many(queries, docs, raw=True)
    torch.cuda.synchronize()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        r.score_many(queries, docs, raw=True)
        times.append(1000 * (time.perf_counter() - start))
    w = windows_of(r)
    torch.cuda.synchronize()
    start = time.perf_counter()
    r._forward(w)
    forward = 1000 * (time.perf_counter() - start)
    flat = [x for g in got for x in g]
    diff = "" if reference is None else f", max |logit - defaults'| {max(abs(a - b) for a, b in zip(flat, reference)):.4f}"
    print(f"{name}: call p50 {statistics.median(times):.1f} ms ({2000 / statistics.median(times) * 1000:.0f} pairs/s), "
          f"forward of tokenised pairs {forward:.1f} ms{diff}", flush=True)
    return flat


base = measure("defaults", Reranker("/tmp/shipped1", device="cuda"))
measure("batch_size=64", Reranker("/tmp/shipped1", device="cuda", batch_size=64), base)


def gelu_in_gemm(self, hidden_states):
    shape = hidden_states.shape
    out = torch._addmm_activation(self.dense.bias, hidden_states.reshape(-1, shape[-1]), self.dense.weight.t(),
                                  use_gelu=True)
    return out.view(*shape[:-1], -1)


xlmr.XLMRobertaIntermediate.forward = gelu_in_gemm
measure("GELU in the GEMM epilogue", Reranker("/tmp/shipped1", device="cuda"), base)
