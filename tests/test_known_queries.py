"""Known queries: answers of similar training questions, fused into the pipeline's ranking."""
from __future__ import annotations

import json

import pytest

from rag_rerank import known_queries, model_settings
from rag_rerank.evaluate import mrr
from rag_rerank.retrieval.fusion import Fusion
from rag_rerank.retrieval.known_queries import KnownQueries, char_bigrams, combine

QA = [("오늘 날씨 어때", ["맑고 따뜻해요."]), ("점심 뭐 먹지", ["김밥 어때요?"]),
      ("주말에 뭐 하지", ["등산 가세요.", "영화 보세요."]), ("점심 메뉴 추천해줘", ["김밥 어때요?"])]


def test_char_bigrams_ignore_spacing():
    assert char_bigrams(["점심 뭐", "점심뭐"]) == [["점심", "심뭐"], ["점심", "심뭐"]]
    assert char_bigrams(["a", ""]) == [["a"], []]


def test_search_finds_the_answer_of_a_rephrased_question():
    memory = KnownQueries(QA)
    assert len(memory) == 4
    assert memory.search("오늘 날씨는 어때요?")[0] == "맑고 따뜻해요."
    assert memory.search("점심메뉴 뭐 먹을까")[0] == "김밥 어때요?"
    both = memory.search("주말에 뭐 하지")
    assert both[:2] == ["등산 가세요.", "영화 보세요."]  # every answer of the known query, in order
    assert "등산 가세요." not in memory.search("주말에 뭐 하지", exclude_self=True)
    held = memory.search("주말에 뭐 하지", allowed=lambda texts: [t != "등산 가세요." for t in texts])
    assert held[0] == "영화 보세요." and "등산 가세요." not in held
    assert memory.search("완전히 무관한 문장입니다") == []  # no shared bigram: nothing
    # as if "김밥 어때요?" were new: the known queries it answered are skipped
    assert "김밥 어때요?" not in memory.search("점심 뭐 먹지", exclude_docs={"김밥 어때요?"})


def test_combine_by_hand():
    w = Fusion(weight=0.5, rrf_k=0.0, depth=2)
    # pipeline a(1) b(2) c(3); known c(1) d(2): c = .5/3 + .5/1, d = .5/2, a = .5, b = .25
    assert combine(w, ["a", "b", "c"], ["c", "d", "e"]) == ["c", "a", "b", "d"]
    assert dict(w.fuse(["a", "b", "c"], ["c", "d"])) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5 / 3 + 0.5, "d": 0.25})  # k 0: x1
    assert combine(known_queries.OFF, ["a", "b"], ["c"]) == ["a", "b"]  # off: the pipeline unchanged
    assert combine(Fusion(1.0, 10.0), ["a", "b"], ["b"]) == ["b", "a"]  # all weight: known first, rest in order
    assert combine(w, ["a", "b"], []) == ["a", "b"]
    with pytest.raises(ValueError):
        Fusion(1.5)


def test_save_and_load_with_a_model(tmp_path):
    (tmp_path / "rag_rerank.json").write_text(json.dumps({"fusion": {"weight": 0.5}}))
    KnownQueries(QA, Fusion(0.4, 2.0, 7, "test")).save(tmp_path)
    loaded = KnownQueries.load(tmp_path)
    assert loaded.queries == [q for q, _ in QA] and loaded.fusion == Fusion(0.4, 2.0, 7, "test")
    settings = model_settings.load(tmp_path)
    assert settings.fusion == Fusion(0.5) and settings.known_query_count == 4  # the reranker's fusion kept
    KnownQueries(QA, Fusion(0.0)).save(tmp_path)
    assert KnownQueries.load(tmp_path) is None  # switched off on validation
    assert KnownQueries.load(tmp_path / "missing") is None
    assert known_queries.resolve(None, lambda: 1 / 0) is None
    with pytest.raises(ValueError):
        known_queries.resolve("yes", lambda: None)


def test_tune_switches_on_only_when_known_queries_gain():
    # the pipeline finds the answer at rank 4; known queries at rank 1 for 8 of 10 queries
    relevant = [{f"p{i}"} for i in range(10)]
    rankings = [[f"n{i}a", f"n{i}b", f"n{i}c", f"p{i}"] for i in range(10)]
    helpful = [[f"p{i}"] if i < 8 else [f"x{i}"] for i in range(10)]
    weight, report = known_queries.tune(rankings, helpful, relevant, mrr)
    assert weight.weight > 0 and report["best_value"] > report["pipeline_value"] == pytest.approx(0.25)
    assert report["queries_with_known"] == 10
    noise = [[f"x{i}", f"y{i}"] for i in range(10)]
    weight, report = known_queries.tune(rankings, noise, relevant, mrr)
    assert weight.weight == 0.0 and report["best_value"] == report["pipeline_value"]


def test_tune_weighs_queries_about_new_documents_too():
    """Seen alone, w=0.9 wins (it lifts a deep answer); but the same weight puts a wrong known
    document above the first-ranked answer when the query's documents are new to training. The
    mean of both takes the milder weight."""
    rankings = [["a", "b", "p"], ["a", "b", "c", "d", "e", "p"], ["p", "a", "b"], ["p", "a", "b"]]
    relevant, seen, unseen = [{"p"}] * 4, [["p"]] * 4, [["x"]] * 4
    grid = dict(weights=(0.0, 0.3, 0.9), rrf_ks=(2.0,))
    assert known_queries.tune(rankings, seen, relevant, mrr, **grid)[0].weight == 0.9
    weight, report = known_queries.tune(rankings, seen, relevant, mrr, known_unseen=unseen, **grid)
    assert weight.weight == 0.3 and report["objective"] == "mean of seen and unseen"
    # by hand: seen MRR (1 + 1/2 + 1 + 1) / 4; unseen (1/3 + 1/7 + 1 + 1) / 4 (x joins at rank 4 and 6)
    assert report["seen_value"] == pytest.approx(0.875)
    assert report["unseen_value"] == pytest.approx((1 / 3 + 1 / 7 + 2) / 4)
    assert report["best_value"] == pytest.approx((report["seen_value"] + report["unseen_value"]) / 2)


def test_known_documents_count_only_what_the_corpus_holds():
    memory = KnownQueries(QA)
    asked = []

    def held(texts):  # what a first stage's find_texts says about each text
        asked.extend(texts)
        return [t != "김밥 어때요?" for t in texts]

    queries = ["점심 뭐 먹지?", "점심 메뉴 추천", "주말에 뭐 할까"]
    found = memory.documents(queries, held)
    assert found[0] == found[1] == [] and found[2][:2] == ["등산 가세요.", "영화 보세요."]
    assert asked.count("김밥 어때요?") == 1  # answers repeat across queries: each text is looked up once
    # no corpus to ask: only a query's own first-stage candidates count as held
    assert memory.documents(queries[:1], None, [["김밥 어때요?", "다른 답"]]) == [["김밥 어때요?"]]


def test_char_bigrams_compose_decomposed_hangul():
    """A decomposed syllable's letters made other bigrams: a known question typed decomposed matched nothing."""
    import unicodedata

    assert char_bigrams([unicodedata.normalize("NFD", "점심 뭐")]) == char_bigrams(["점심 뭐"])
