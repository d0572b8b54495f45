"""LlamaIndex: a RetrieverQueryEngine over our Chroma store, reranked by a Korean cross-encoder.

    python examples/llama_index_query_engine.py [--reranker MODEL_OR_DIR]

Offline it uses MockLLM (the answer text is a placeholder); the point is which passages the
engine hands to the LLM: the reranked top 3 of 10 hybrid (dense + Kiwi BM25) candidates.
"""
import asyncio

from _common import PASSAGES, QUESTIONS, parse_args, show, store_dir
from llama_index.core import get_response_synthesizer
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from rag_rerank import Reranker
from rag_rerank.integrations.llama_index import ChromaBiEncoderRetriever, KoreanReranker
from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.retrieval.store import ChromaStore


def main() -> None:
    args = parse_args(__doc__)
    store = ChromaStore(store_dir(args), "example-llama-index", encoder=args.encoder)
    store.add(PASSAGES)
    engine = RetrieverQueryEngine(
        retriever=ChromaBiEncoderRetriever(TwoStageRetriever(store, mode="hybrid", candidate_k=10), rerank=False),
        node_postprocessors=[KoreanReranker(reranker=Reranker(args.reranker), top_n=3)],
        response_synthesizer=get_response_synthesizer(llm=MockLLM()),
    )
    for question in QUESTIONS:
        response = engine.query(question)
        # the final (fused) score, and what each stage gave it
        show(question, [(f"score {n.score:.3f} (rerank {n.node.metadata['rerank_score']:.3f}, first stage "
                         f"{n.node.metadata['first_stage_score']:.3f})", n.node.get_content())
                        for n in response.source_nodes])
    answer = asyncio.run(engine.aquery(QUESTIONS[0]))
    print(f"\n(async) {QUESTIONS[0]} -> {answer.source_nodes[0].node.get_content()}")


if __name__ == "__main__":
    main()
