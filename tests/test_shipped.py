"""The Korean reranker the package ships: rebuilt from its delta on the offline e5 twin, it scores as
the trained model did, and `Reranker()` loads it (saying so) where the hub cannot deliver the default."""
import json
import logging

import pytest

from rag_rerank import Reranker, models

SHIPPED = models.SHIPPED_DIR / models.SHIPPED_RERANKER


def test_materialised_reranker_scores_like_the_trained_model(e5_cross_encoder):
    reference = json.loads((SHIPPED / "reference.json").read_text(encoding="utf-8"))
    reranker = Reranker(str(e5_cross_encoder), device="cpu")
    got = [reranker.score(p["query"], [p["document"]], raw=True)[0] for p in reference["pairs"]]
    want = [p["logit"] for p in reference["pairs"]]
    diff = max(abs(a - b) for a, b in zip(got, want))
    print(f"shipped reranker vs the trained model ({reference['made_with']}): max abs logit diff {diff:.2e} "
          f"over {len(want)} pairs (logits span {min(want):.2f}..{max(want):.2f})")
    assert diff < 5e-3  # fp16 factors of the LoRA update + GPU vs CPU arithmetic


def test_materialise_is_cached_and_named_by_the_delta(e5_cross_encoder, e5_dir):
    again = models.materialize(models.SHIPPED_RERANKER)
    assert again == e5_cross_encoder and (again / ".complete").exists()
    assert models.SHIPPED_RERANKER in models.offline_names()
    assert models.resolve(models.OFFLINE_PREFIX + models.SHIPPED_RERANKER) == e5_cross_encoder
    config = json.loads((again / "config.json").read_text())
    # the full e5 vocabulary, not the cut twin it was trained on (rag_rerank.models.subset)
    assert config["vocab_size"] == json.loads((e5_dir / "config.json").read_text())["vocab_size"] > 250000


def test_default_reranker_without_the_hub_is_the_shipped_one(e5_cross_encoder, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="rag_rerank"):
        reranker = Reranker()
    assert reranker.path == e5_cross_encoder
    said = [r.getMessage() for r in caplog.records if "shipped reranker" in r.getMessage()]
    assert len(said) == 1 and models.DEFAULT_RERANKER in said[0]
    question = "한글은 누가 만들었나요?"
    docs = ["한글날은 매년 10월 9일로, 한글 창제를 기념하는 국경일이다.",
            "김치는 배추와 고춧가루로 담그는 발효 음식이다.",
            "훈민정음은 1443년 조선의 세종대왕이 창제한 문자로, 오늘날 한글이라 불린다."]
    ranked = reranker.rerank(question, docs)
    assert ranked[0].index == 2 and ranked[-1].index == 1


def test_stand_in_is_not_a_training_base(e5_cross_encoder, monkeypatch):
    """`rag-rerank train` without the hub fine-tunes e5, not the shipped reranker (see trainer.resolve_base)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotFoundError):
        models.resolve(models.DEFAULT_RERANKER, substitute=False)


def test_shipped_files_are_small_and_licensed():
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 4 * 2**20
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "CC BY-ND 2.0 KR" in card and "KorQuAD" in card


def test_framework_adapters_default_to_the_shipped_reranker_without_a_hub(e5_cross_encoder, monkeypatch):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rag_rerank.integrations.langchain import KoreanCrossEncoderReranker
    from rag_rerank.integrations.llama_index import KoreanReranker

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    docs = ["김치는 배추로 담그는 발효 음식이다.", "훈민정음은 1443년 세종대왕이 창제한 문자이다."]
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in docs]
    # a question the reranker is sure of (0.90 against 0.01): it overrides the order nodes came in, under the
    # shipped score fusion too (where it guesses - "한글은 누가 만들었나요?", 0.018 against 0.004 - that order stays)
    out = KoreanReranker(top_n=1).postprocess_nodes(nodes, QueryBundle("훈민정음은 누가 창제했나요?"))
    assert out[0].node.get_content() == docs[1]
    from langchain_core.documents import Document

    compressor = KoreanCrossEncoderReranker(top_n=1)
    assert compressor._stage.reranker.path == e5_cross_encoder
    got = compressor.compress_documents([Document(page_content=t) for t in docs], "훈민정음은 누가 창제했나요?")
    assert got[0].page_content == docs[1]
