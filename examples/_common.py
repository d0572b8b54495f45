"""Shared set-up for the examples: a Korean corpus, a store and a reranker that work offline.

The reranker is the default, ``bongsoo/albert-small-kor-cross-encoder-v1``, from the hub; without one
`Reranker` loads the Korean reranker the package ships (rebuilt once from its delta on the offline
multilingual-e5-small and cached) and logs that it did.
"""
from __future__ import annotations

import argparse
import tempfile

from rag_rerank.demo import FACTS

PASSAGES = FACTS  # ten hand-written Korean facts (rag_rerank.demo)
QUESTIONS = ["훈민정음을 만든 사람은 누구인가요?", "한국의 전통 발효 음식은 무엇인가요?", "화산섬으로 유명한 곳은?"]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reranker", default="bongsoo/albert-small-kor-cross-encoder-v1")
    parser.add_argument("--encoder", default="intfloat/multilingual-e5-small")
    parser.add_argument("--store", default=None, help="store directory (default: a temporary one)")
    return parser.parse_args()


def store_dir(args) -> str:
    return args.store or tempfile.mkdtemp(prefix="rag-rerank-example-")


def show(question: str, ranked, answer: str | None = None) -> None:
    """One question's results: ``ranked`` is (scores as text, passage) best first."""
    print(f"\n질문: {question}" + (f"\n답변: {answer}" if answer is not None else ""))
    for rank, (scores, text) in enumerate(ranked, 1):
        print(f"  {rank}. {scores}  {text}")
