"""Session 11 probes on the GPU machine: (1) how parallel the Rust tokenizer runs there (the 1 x 50 call's
tokenising read 4-5 ms on the H200 host, as long as on a 2-core CPU); (2) CUDA graphs on the shipped model:
graphs vs eager scores of one question's 50 passages, and the graphs recorded."""
import json
import os
import statistics
import sys
import time

what = sys.argv[1]
texts = [json.loads(line)["text"] for line in open(".gpu/work/korquad/test_corpus.jsonl", encoding="utf-8")][:50]


def median_ms(fn, n=50):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


if what == "tokenize":
    from transformers import AutoTokenizer

    print({k: os.environ.get(k) for k in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS", "OMP_NUM_THREADS")},
          "cpu_count", os.cpu_count(), "affinity", len(os.sched_getaffinity(0)))
    backend = AutoTokenizer.from_pretrained("/tmp/shipped1").backend_tokenizer
    print(f"encode_batch_fast x50: {median_ms(lambda: backend.encode_batch_fast(texts, add_special_tokens=False)):.2f} ms; "
          f"one by one: {median_ms(lambda: [backend.encode(t, add_special_tokens=False) for t in texts]):.2f} ms")
else:
    import torch

    from rag_rerank import Reranker

    query = "임종석이 여의도 농민 폭력 시위를 주도한 혐의로 지명수배된 날은?"
    eager = Reranker("/tmp/shipped1", device="cuda", cuda_graphs=False)
    graphs = Reranker("/tmp/shipped1", device="cuda")
    a, b = eager.score(query, texts, raw=True), graphs.score(query, texts, raw=True)
    print("graphs enabled:", graphs._graphs.enabled, "recorded:", len(graphs._graphs),
          "max |graphs - eager| logit:", max(abs(x - y) for x, y in zip(a, b)))
    for name, r in (("eager", eager), ("graphs", graphs)):
        print(name, f"1 x 50 median {median_ms(lambda: r.score(query, texts), 100):.2f} ms")
    torch.cuda.synchronize()
