"""The pipeline through the frameworks (issue 16): LlamaIndex and LangChain against the CLI, one run.

One first stage, three ways to the same second stage, scored on the same questions:

* ``rag-rerank eval`` (the CLI's default pipeline row: the model's hybrid over the saved dense and
  BM25 rankings, reranked, fused with the model's saved fusion);
* a LlamaIndex ``RetrieverQueryEngine`` (MockLLM, ``response_mode='no_text'``) whose retriever returns that first stage's top
  ``--depth`` as nodes and whose node postprocessor is ``KoreanReranker(top_n=10)``;
* a LangChain ``ContextualCompressionRetriever`` over a retriever returning the same documents, with
  ``KoreanCrossEncoderReranker(top_n=10)`` as its compressor.

A user's retriever is whatever their vector store gives; here it replays the saved rankings so that
all three see the same candidates in the same order (the postprocessor and the compressor fuse with
the order they receive). MRR@10 of each, and how many questions' top 10 differ from the CLI's.

    python bench/framework_quality.py --candidates W/korquad/test.hybrid.jsonl.gz \
        --corpus W/korquad/test_corpus.jsonl --reranker DIR --out bench/results/X/framework_quality
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path


def cli_row(args) -> dict:
    """The CLI's default pipeline row, run in this process as a user would from the shell."""
    from rag_rerank import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["eval", "--data", args.candidates, "--candidates", args.candidates, "--corpus", args.corpus,
                       "--mode", "hybrid", "--candidate-k", str(args.depth), "--json", "--reranker", args.reranker]
                      + (["--device", args.device] if args.device else []))
    if rc != 0:
        raise SystemExit(f"rag-rerank eval exited {rc}")
    rows = json.loads(out.getvalue())
    return rows[-1] | {"rows": rows}  # the last row: reranked and fused over the model's hybrid


def first_stage(args, reranker):
    """The same first stage the CLI evaluates: the model's tuned hybrid over the saved sides."""
    from rag_rerank import model_settings
    from rag_rerank.retrieval.first_stage import SavedCandidates
    from rag_rerank.retrieval.store import iter_documents
    from rag_rerank.train import data

    corpus = [d.text for d in iter_documents(args.corpus)]
    stage = SavedCandidates(data.load(args.candidates), mode="hybrid", corpus=corpus)
    hybrid = model_settings.load(reranker.path).hybrid
    return stage.with_hybrid(hybrid) if hybrid is not None else stage


def llama_index_rankings(stage, reranker, queries, depth: int, top_n: int) -> list[list[str]]:
    from llama_index.core import Settings, get_response_synthesizer
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    from llama_index.postprocessor.rag_rerank import KoreanReranker

    class Replayed(BaseRetriever):
        def _retrieve(self, query_bundle):
            return [NodeWithScore(node=TextNode(text=h.text, id_=h.id), score=h.score)
                    for h in stage.candidates(query_bundle.query_str, depth)]

    Settings.llm = MockLLM()  # the no_text synthesizer takes its LLM from Settings (none is called)
    # and a token counter: LlamaIndex's default is tiktoken's cl100k, fetched from the internet when its
    # cached copy does not match the installed tiktoken; the reranker's own tokenizer counts offline
    Settings.tokenizer = reranker.tokenizer.encode
    engine = RetrieverQueryEngine(retriever=Replayed(),
                                  node_postprocessors=[KoreanReranker(reranker=reranker, top_n=top_n)],
                                  # no_text: what is measured is the nodes handed to the LLM; MockLLM's small
                                  # context window cannot hold ten 300-500-token passages to "answer" over
                                  response_synthesizer=get_response_synthesizer(response_mode="no_text"))
    return [[n.node.get_content() for n in engine.query(q).source_nodes] for q in queries]


def langchain_rankings(stage, reranker, queries, depth: int, top_n: int) -> list[list[str]]:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from langchain_rag_rerank import KoreanCrossEncoderReranker

    class Replayed(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=h.text, id=h.id, metadata={"relevance_score": h.score})
                    for h in stage.candidates(query, depth)]

    retriever = ContextualCompressionRetriever(base_retriever=Replayed(),
                                               base_compressor=KoreanCrossEncoderReranker(reranker=reranker, top_n=top_n))
    return [[d.page_content for d in retriever.invoke(q)] for q in queries]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", required=True, help="saved hybrid candidates with both sides (bench/quality.py)")
    p.add_argument("--corpus", required=True)
    p.add_argument("--reranker", required=True)
    p.add_argument("--device")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--top-n", type=int, default=10, help="what the frameworks keep (MRR@10 needs 10)")
    p.add_argument("--queries", type=int, default=0, help="first N questions only (0: all)")
    p.add_argument("--out")
    args = p.parse_args(argv)

    from rag_rerank import Reranker
    from rag_rerank.evaluate import ranking_metrics
    from rag_rerank.train import data

    groups = [g for g in data.load(args.candidates).groups if g.positives]
    if args.queries:  # the CLI scores the file as given: cut it the same way
        cut = Path(args.out or "framework_quality").with_suffix(".queries.jsonl")
        cut.parent.mkdir(parents=True, exist_ok=True)
        data.save_jsonl(data.TrainingData(groups[: args.queries]), cut)
        args.candidates, groups = str(cut), groups[: args.queries]
    queries, relevant = [g.query for g in groups], [set(g.positives) for g in groups]
    start = time.perf_counter()
    cli = cli_row(args)
    result = {"queries": len(queries), "depth": args.depth, "top_n": args.top_n, "reranker": args.reranker,
              "rows": [{"path": "rag-rerank eval (CLI), default pipeline", "system": cli["system"],
                        "MRR@10": cli["MRR@10"], "R@1": cli["R@1"], "seconds": time.perf_counter() - start}],
              "cli_rows": cli["rows"]}
    reranker = Reranker(args.reranker, device=args.device)
    stage = first_stage(args, reranker)
    first = [[h.text for h in stage.candidates(q, args.depth)[:10]] for q in queries]  # fused at full depth, as the CLI
    result["first_stage"] = {"MRR@10": ranking_metrics(first, relevant)["MRR@10"]}
    rankings = {}
    for path, fn in (("LlamaIndex RetrieverQueryEngine + KoreanReranker", llama_index_rankings),
                     ("LangChain ContextualCompressionRetriever + KoreanCrossEncoderReranker", langchain_rankings)):
        start = time.perf_counter()
        rankings[path] = fn(stage, reranker, queries, args.depth, args.top_n)
        metrics = ranking_metrics(rankings[path], relevant)
        result["rows"].append({"path": path, "MRR@10": metrics["MRR@10"], "R@1": metrics["R@1"],
                               "seconds": time.perf_counter() - start})
        print(f"{path}: MRR@10 {metrics['MRR@10']:.4f}", flush=True)
    a, b = rankings.values()
    result["top10_differ_between_frameworks"] = sum(x != y for x, y in zip(a, b))
    result["machine"] = _machine(reranker)
    text = table(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        out.with_suffix(".md").write_text(text)
    return 0


def _machine(reranker) -> str:
    import os
    import platform

    import torch

    if reranker.device.type == "cuda":
        return torch.cuda.get_device_name(reranker.device)
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def table(result: dict) -> str:
    lines = [f"Machine: **{result['machine']}**. {result['queries']} questions, first stage top {result['depth']}, "
             f"first stage alone MRR@10 {result['first_stage']['MRR@10']:.4f}.", "",
             "| path | MRR@10 | R@1 | seconds |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        path = r["path"] + (f" (its row `{r['system']}`)" if "system" in r else "")
        lines.append(f"| {path} | {r['MRR@10']:.4f} | {r['R@1']:.4f} | {r['seconds']:.1f} |")
    lines += ["", f"Questions whose top 10 differ between the two frameworks: "
              f"{result['top10_differ_between_frameworks']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
