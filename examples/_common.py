"""Shared set-up for the examples: a Korean corpus, a store and a reranker that work offline.

The reranker is the default, ``bongsoo/albert-small-kor-cross-encoder-v1``, from the hub; without one
`Reranker` loads the Korean reranker the package ships (rebuilt once from its delta on the offline
multilingual-e5-small and cached) and logs that it did.
"""
from __future__ import annotations

import argparse
import tempfile

PASSAGES = [
    "세종대왕은 1443년에 훈민정음을 창제하여 백성이 글을 쉽게 익히도록 했다.",
    "한글날은 매년 10월 9일로, 한글 창제를 기념하는 국경일이다.",
    "김치는 배추와 고춧가루, 마늘 등으로 담그는 한국의 전통 발효 음식이다.",
    "비빔밥은 밥 위에 나물과 고기, 고추장을 올려 비벼 먹는 음식이다.",
    "제주도는 화산섬으로 한라산과 아름다운 해변으로 알려져 있다.",
    "부산은 한국에서 두 번째로 큰 항구 도시로 해운대 해수욕장이 유명하다.",
    "지하철 2호선은 서울 도심을 순환하는 노선이다.",
    "감기에 걸리면 충분히 쉬고 물을 많이 마시는 것이 좋다.",
    "반도체는 한국 수출에서 가장 큰 비중을 차지하는 품목이다.",
    "적금은 매달 일정한 금액을 넣고 만기에 이자와 함께 돌려받는 예금이다.",
]
QUESTIONS = ["훈민정음을 만든 사람은 누구인가요?", "한국의 전통 발효 음식은 무엇인가요?", "화산섬으로 유명한 곳은?"]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reranker", default="bongsoo/albert-small-kor-cross-encoder-v1")
    parser.add_argument("--encoder", default="intfloat/multilingual-e5-small")
    parser.add_argument("--store", default=None, help="store directory (default: a temporary one)")
    return parser.parse_args()


def store_dir(args) -> str:
    return args.store or tempfile.mkdtemp(prefix="rag-rerank-example-")
