"""The hybrid first stage tuned on validation vs its parts, on KorQuAD split by article (issue 13).

Equal-weight RRF of dense e5 and Kiwi BM25 fell below BM25 alone on KorQuAD-style passages (the
held-out check: hybrid 0.874 vs BM25 0.914 MRR@10). `rag-rerank train` now chooses BM25's share
on its validation part (rag_rerank.retrieval.first_stage.tune_hybrid). This runs that tuner the same way:
the articles split as bench/quality.py splits them (fixed shuffle; 20 % test, 10 % validation),
corpus = every paragraph; weights chosen on the validation articles' questions only, then every
first stage scored on the test articles' questions, side by side in one process.

    python bench/hybrid_first_stage.py [--data ../shared/data] [--out bench/results/hybrid_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("RAG_RERANK_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--encoder", default="intfloat/multilingual-e5-small")
    p.add_argument("--depth", type=int, default=50, help="first-stage depth (the pipeline's candidate_k)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    os.environ["RAG_RERANK_DATA"] = args.data
    import quality  # the task split of the quality benchmark, so both use the same articles

    from rag_rerank.evaluate import METRICS, mrr, ranking_metrics
    from rag_rerank.retrieval.first_stage import EQUAL, InMemoryCorpus, tune_hybrid
    from rag_rerank.retrieval.fusion import Fusion

    quality.DATA = Path(args.data)
    _, validation, test, corpus = quality._korquad()
    start = time.perf_counter()
    first_stage = InMemoryCorpus(corpus, mode="hybrid", encoder=args.encoder)
    index_seconds = time.perf_counter() - start
    tuned, report = tune_hybrid(first_stage, list(validation), [set(v) for v in validation.values()], mrr,
                                depth=args.depth, tuned_on=f"{len(validation)} validation questions")
    queries, relevant = list(test), [set(v) for v in test.values()]
    dense, lexical = first_stage.sides_many(queries, args.depth)
    systems = {"BM25 (Kiwi)": Fusion(1.0), "dense (e5)": Fusion(0.0), "hybrid, equal weights (before)": EQUAL,
               f"hybrid, tuned on validation (BM25 share {tuned.weight:g}, k {tuned.rrf_k:g})": tuned}
    text = {h.id: h.text for row in (*dense, *lexical) for h in row}
    rows = {}
    for name, fusion in systems.items():
        rankings = [[text[i] for i, _ in fusion.fuse([h.id for h in d], [h.id for h in lx])][: args.depth]
                    for d, lx in zip(dense, lexical)]
        rows[name] = ranking_metrics(rankings, relevant)
        rows[name]["R@50"] = sum(bool(set(r) & rel) for r, rel in zip(rankings, relevant)) / len(relevant)
    machine = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    print(f"KorQuAD split by article: {len(test)} test questions, {len(validation)} validation questions, "
          f"corpus {len(corpus)} paragraphs; {machine}; indexing {index_seconds:.0f} s\n")
    print("| first stage (test articles) | " + " | ".join(METRICS) + " | R@50 |\n|---|" + "---:|" * (len(METRICS) + 1))
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in METRICS) + f" | {m['R@50']:.4f} |")
    print(f"\nvalidation MRR@10: equal {report['baseline_value']:.4f}, tuned {report['best_value']:.4f}, "
          f"dense {report['dense_value']:.4f}, BM25 {report['bm25_value']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "test": rows, "validation": report,
                                              "test_queries": len(test), "validation_queries": len(validation),
                                              "corpus": len(corpus)}, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
