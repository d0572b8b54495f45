"""Score fusion of the reranker with the first stage, and its tuning on validation data."""
from __future__ import annotations

import pytest

from rag_rerank import fusion, model_settings
from rag_rerank.retrieval.pipeline import rerank_fused
from rag_rerank.evaluate import mrr
from rag_rerank.retrieval.fusion import Fusion, weighted_rrf


def test_plain_fusion_is_reranking_and_zero_weight_is_the_first_stage():
    scores = [0.1, 0.9, 0.5, 0.7]
    assert Fusion().order(scores) == [1, 3, 2, 0]
    assert Fusion(weight=0.0).order(scores) == [0, 1, 2, 3]
    assert Fusion().fused_scores(scores) == scores


def test_weighted_rrf_by_hand():
    # rerank ranks: doc1 1st, doc2 2nd, doc0 3rd; first-stage ranks 1, 2, 3
    f = Fusion(weight=0.5, rrf_k=1)
    fused = f.fused_scores([0.1, 0.9, 0.5])
    assert fused == pytest.approx([2 * (0.5 / 4 + 0.5 / 2), 2 * (0.5 / 2 + 0.5 / 3), 2 * (0.5 / 3 + 0.5 / 4)])
    assert f.order([0.1, 0.9, 0.5]) == [1, 0, 2]


def test_fused_scores_are_in_zero_one_with_one_first_in_both():
    for k in (0.0, 2.0, 60.0):
        fused = Fusion(weight=0.3, rrf_k=k).fused_scores([0.9, 0.1, 0.5])  # doc 0 first in both
        assert fused[0] == pytest.approx(1.0) and all(0 < f < 1 for f in fused[1:])
    assert dict(Fusion(0.0, 60.0).fuse(["a", "b"], ["b"])) == pytest.approx({"a": 1.0, "b": 61 / 62})


def test_depth_reranks_only_the_head_and_keeps_the_tail_in_order():
    f = Fusion(depth=2)
    assert f.head(5) == 2
    assert f.order([0.2, 0.8], total=5) == [1, 0, 2, 3, 4]
    fused = Fusion(weight=0.6, rrf_k=10, depth=2).fused_scores([0.2, 0.8], total=4)
    assert min(fused[:2]) > max(fused[2:])  # every reranked candidate stays above the tail


def test_bad_values_rejected():
    for kwargs in ({"weight": 1.5}, {"weight": -0.1}, {"rrf_k": -1}, {"depth": 0}, {"weight": None}):
        with pytest.raises(ValueError):
            Fusion(**kwargs)


def test_save_and_load_next_to_a_model(tmp_path):
    assert model_settings.load(tmp_path) == model_settings.ModelSettings()
    f = Fusion(0.7, 10.0, 20, "validation")
    model_settings.ModelSettings(fusion=f, first_stage="hybrid").save(tmp_path)
    assert model_settings.load(tmp_path).fusion == f
    settings = model_settings.load(tmp_path).replace(fusion=Fusion())
    settings.save(tmp_path)  # rewriting keeps the other keys
    assert model_settings.load(tmp_path) == model_settings.ModelSettings(fusion=Fusion(), first_stage="hybrid")
    (tmp_path / model_settings.CONFIG_FILE).write_text('{"fusion": {"weight": 0.5}, "from_a_newer_version": 1}')
    settings = model_settings.load(tmp_path)  # keys it does not know survive a rewrite
    settings.save(tmp_path)
    assert model_settings.load(tmp_path).extra == {"from_a_newer_version": 1}


def test_weighted_rrf_is_the_one_fusion():
    # x: 1/(1+1) + 0.5/(1+2); y: 1/(1+2) + 0.5/(1+1); z only in the second ranking
    fused = weighted_rrf([["x", "y"], ["z", "y", "x"]], [1.0, 0.5], rrf_k=1)
    assert fused == [("x", pytest.approx(0.5 + 0.5 / 4)), ("y", pytest.approx(1 / 3 + 0.5 / 3)),
                     ("z", pytest.approx(0.25))]
    assert [k for k, _ in weighted_rrf([["a", "b"], ["b", "a"]], [1.0, 1.0])] == ["a", "b"]  # tie: first seen
    assert weighted_rrf([["a", "a", "b"]], [1.0], rrf_k=0) == [("a", 1.0), ("b", 0.5)]  # a repeat counts once
    assert [k for k, _ in Fusion(0.0).fuse(["a", "b"], ["c", "b"])] == ["a", "b"]  # weight 0: the base alone
    assert [k for k, _ in Fusion(1.0).fuse(["a", "b"], ["c", "b"])] == ["c", "b", "a"]  # weight 1: base orders the rest
    with pytest.raises(ValueError):
        weighted_rrf([["a"]], [1.0, 1.0])


def test_tune_keeps_plain_reranking_when_the_reranker_is_right():
    cands = [["a", "b", "c"], ["d", "e", "f"]]
    scores = [[0.1, 0.9, 0.2], [0.1, 0.2, 0.9]]  # reranker puts the positive first
    best, report = fusion.tune_reranker(cands, scores, [{"b"}, {"f"}], mrr)
    assert best.is_plain and report["best_value"] == 1.0 and report["plain_value"] == 1.0


def test_tune_leans_on_the_first_stage_when_the_reranker_errs_on_close_calls():
    # first stage always right at rank 1; reranker puts the positive 2nd, narrowly
    cands = [[f"p{i}", f"n{i}", f"m{i}"] for i in range(20)]
    scores = [[0.50, 0.51, 0.1] for _ in range(20)]
    best, report = fusion.tune_reranker(cands, scores, [{f"p{i}"} for i in range(20)], mrr)
    assert not best.is_plain and best.weight < 1.0
    assert report["best_value"] == 1.0 and report["plain_value"] == 0.5 and report["first_stage_value"] == 1.0


def test_score_interpolation_by_hand_keeps_the_rerankers_confidence():
    """fused = w * p + (1 - w) * (k + 1) / (k + rank): a sure reranker overrides the first stage, a
    guessing one (scores bunched) leaves its order; rank fusion moves both alike."""
    f = Fusion(weight=0.5, rrf_k=1, method="score")
    assert f.fused_scores([0.1, 0.9, 0.5]) == pytest.approx([0.5 * 0.1 + 0.5, 0.5 * 0.9 + 0.5 * 2 / 3,
                                                             0.5 * 0.5 + 0.5 * 2 / 4])
    assert f.order([0.02, 0.98, 0.05]) == [1, 0, 2]  # sure: the reranker's first goes first
    assert f.order([0.30, 0.31, 0.29]) == [0, 1, 2]  # guessing: first-stage order stays
    assert Fusion(weight=0.6, rrf_k=1).order([0.30, 0.31, 0.29]) == [1, 0, 2]  # rank fusion follows the guess
    assert Fusion(weight=0.5, rrf_k=1, method="score").order([-4.0, 3.0]) == [1, 0]  # raw logits: a sigmoid
    assert fusion.probabilities([0.0, 0.5]) == [0.0, 0.5] and fusion.probabilities([0.0, 2.0])[0] == 0.5
    tail = Fusion(weight=0.9, rrf_k=2, depth=2, method="score").fused_scores([0.0, 0.0], total=5)
    assert min(tail[:2]) >= max(tail[2:]) and Fusion(0.3, 2.0, 2, None, "score").order([0.0, 0.0], 4) == [0, 1, 2, 3]
    assert Fusion(weight=0.0, method="score").order([0.1, 0.9]) == [0, 1]


def test_score_method_saves_and_old_files_read_as_rank(tmp_path):
    f = Fusion(0.4, 10.0, 20, "held-out tasks", "score")
    model_settings.ModelSettings(fusion=f).save(tmp_path)
    assert model_settings.load(tmp_path).fusion == f and f.describe() == "score w=0.4 k=10 top 20"
    assert "method" not in Fusion(0.4).to_dict() and Fusion.from_dict({"weight": 0.4}).method == "rank"
    for kwargs in ({"method": "mean"}, {"weight": "0.5"}, {"depth": 2.5}, {"rrf_k": float("nan")}, {"depth": True}):
        with pytest.raises(ValueError, match="fusion (method|weight|depth|rrf_k)"):
            Fusion(**kwargs)


def test_a_fusion_validation_barely_supports_is_not_kept():
    """The best setting must gain the margin and win the paired bootstrap: one lucky query of 40 is noise."""
    cands = [[f"p{i}", f"n{i}", f"m{i}"] for i in range(40)]
    scores = [[0.9, 0.1, 0.1] for _ in range(40)]  # the reranker is right on all but one query
    scores[0] = [0.50, 0.51, 0.1]  # where the first stage is right and the reranker narrowly wrong
    best, report = fusion.tune_reranker(cands, scores, [{f"p{i}"} for i in range(40)], mrr)
    assert best.is_plain and report["kept"] == "plain reranking" and "bootstrap" in report["why"]
    assert report["best_gain"] == pytest.approx(0.5 / 40) and report["best_win_rate"] < 0.9


def test_rerank_fused_scores_only_the_depth(tiny_reranker):
    calls = []
    original = tiny_reranker.score_many

    def spy(queries, docs):
        calls.append([len(d) for d in docs])
        return original(queries, docs)

    tiny_reranker.score_many = spy
    try:
        out = rerank_fused(tiny_reranker, ["질문", "다른 질문"], [["가", "나", "다", "라"], ["마", "바"]],
                                  Fusion(depth=3))
    finally:
        del tiny_reranker.score_many
    assert calls == [[3, 2]]
    first, second = out
    assert sorted(i for i, _, _ in first) == [0, 1, 2, 3] and first[3][0] == 3  # the unscored tail stays last
    assert [r is None for _, _, r in first] == [False, False, False, True]
    assert len(second) == 2 and all(r is not None for _, _, r in second)


@pytest.fixture(scope="module")
def tiny_reranker(tiny_ce):
    from rag_rerank import Reranker

    return Reranker(str(tiny_ce))


def test_fused_row_from_plain_scores_equals_rescoring_with_the_fusion(tiny_reranker):
    """rag-rerank eval and the training report derive the fused row from the plain row's scores
    instead of scoring again: same ranking as a fused rerank, at no extra reranker calls."""
    from rag_rerank import evaluate
    from rag_rerank.train.data import Group

    groups = [Group("서울의 날씨", ["맑음"]), Group("점심 메뉴", ["김밥"]), Group("주말 계획", ["등산"])]
    candidates = [["흐림", "비", "맑음", "눈", "바람"], ["김밥", "라면", "국수"], ["독서", "등산", "낮잠", "영화"]]
    plain, scores = evaluate.score_candidates(tiny_reranker, groups, candidates, "plain")
    for f in (Fusion(weight=0.5, rrf_k=2), Fusion(weight=0.3, rrf_k=10, depth=2), Fusion(weight=0.0)):
        derived = evaluate.fused_rankings(candidates, scores, f)
        rescored = rerank_fused(tiny_reranker, [g.query for g in groups], candidates, f)
        assert derived == [[c[i] for i, _, _ in row] for c, row in zip(candidates, rescored)]


class _TwoSides:
    """Stand-in sides for tune_hybrid: a dense side that misses and a BM25 side that finds."""

    def __init__(self, dense, lexical):
        self.dense, self.lexical = dense, lexical

    def sides_many(self, queries, k):
        from rag_rerank.types import Hit

        def hits(rows):
            return [[Hit(t, t, {}, 1.0, 1.0, r) for r, t in enumerate(row[:k], 1)] for row in rows]

        return hits(self.dense), hits(self.lexical)


def test_tune_hybrid_leans_on_the_stronger_side_and_keeps_equal_weights_otherwise():
    from rag_rerank.retrieval.first_stage import EQUAL, tune_hybrid

    relevant = [{f"p{i}"} for i in range(20)]
    dense = [[f"x{i}", f"y{i}", f"z{i}", f"w{i}", f"p{i}"] for i in range(20)]  # the answer 5th
    lexical = [[f"p{i}", f"y{i}", f"x{i}"] for i in range(20)]  # the answer first
    best, report = tune_hybrid(_TwoSides(dense, lexical), [f"q{i}" for i in range(20)], relevant, mrr)
    assert best.weight > EQUAL.weight and report["best_value"] == report["bm25_value"] == 1.0
    assert report["baseline_value"] < 1.0 and report["dense_value"] == pytest.approx(0.2)
    same = [[f"p{i}", f"y{i}"] for i in range(20)]
    best, report = tune_hybrid(_TwoSides(same, same), [f"q{i}" for i in range(20)], relevant, mrr)
    assert (best.weight, best.rrf_k) == (EQUAL.weight, EQUAL.rrf_k)  # nothing gains: equal weights stay


def test_eval_progress_scores_in_chunks_with_the_same_result(tiny_reranker, capsys, monkeypatch):
    from rag_rerank import evaluate
    from rag_rerank.train.data import Group

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(evaluate, "PROGRESS_CHUNK", 4)
    groups = [Group(f"질문 {i}", [f"답 {i}"]) for i in range(10)]
    candidates = [[f"답 {i}", f"다른 답 {i}", "공통"] for i in range(10)]
    quiet_row, quiet = evaluate.score_candidates(tiny_reranker, groups, candidates, "+ m")
    shown_row, shown = evaluate.score_candidates(tiny_reranker, groups, candidates, "+ m", progress=True)
    assert [x for row in shown for x in row] == pytest.approx([x for row in quiet for x in row], abs=1e-6)
    assert shown_row.metrics == quiet_row.metrics
    assert "reranking (m)" in capsys.readouterr().err
