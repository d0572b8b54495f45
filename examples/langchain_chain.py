"""LangChain: ContextualCompressionRetriever(our reranker over our Chroma retriever) in an LCEL chain.

    python examples/langchain_chain.py [--reranker MODEL_OR_DIR]

Offline the chat model is a fake that always says the same thing; the documents the chain
retrieved (with their relevance_score) are the real output.
"""
import asyncio

from _common import PASSAGES, QUESTIONS, parse_args, show, store_dir
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel, RunnablePassthrough

from rag_rerank import Reranker
from rag_rerank.integrations.langchain import KoreanChromaRetriever, KoreanCrossEncoderReranker
from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.retrieval.store import ChromaStore


def main() -> None:
    args = parse_args(__doc__)
    store = ChromaStore(store_dir(args), "example-langchain", encoder=args.encoder)
    store.add(PASSAGES)
    retriever = ContextualCompressionRetriever(
        base_compressor=KoreanCrossEncoderReranker(reranker=Reranker(args.reranker), top_n=3),
        base_retriever=KoreanChromaRetriever(pipeline=TwoStageRetriever(store, mode="hybrid", candidate_k=10),
                                             rerank=False),
    )
    prompt = ChatPromptTemplate.from_template("문맥:\n{context}\n\n질문: {question}")
    llm = FakeListChatModel(responses=["(오프라인 예시: 가짜 모델의 답변)"])
    answer = (lambda x: {"context": "\n".join(d.page_content for d in x["docs"]), "question": x["question"]}) \
        | prompt | llm | StrOutputParser()
    chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)
    for question in QUESTIONS:
        out = chain.invoke(question)
        # relevance_score: the final score (the reranker fused with the retriever's order)
        show(question, [(f"relevance {d.metadata['relevance_score']:.3f} (rerank {d.metadata['rerank_score']:.3f})",
                         d.page_content) for d in out["docs"]], answer=out["answer"])
    out = asyncio.run(chain.ainvoke(QUESTIONS[0]))
    print(f"\n(ainvoke) {QUESTIONS[0]} -> {out['docs'][0].page_content}")


if __name__ == "__main__":
    main()
