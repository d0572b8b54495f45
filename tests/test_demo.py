"""`rag-rerank demo`, the main job: offline, it indexes the shipped KorQuAD paragraphs, reranks, and shows
the reranker beating the first stage on its questions."""
import re

from rag_rerank import demo


def test_demo_questions_are_held_out_and_spread_over_articles():
    paragraphs, questions = demo.corpus_and_questions(demo.QUESTIONS)
    texts = {p["text"] for p in paragraphs}
    assert len(paragraphs) == 56 and len(questions) == demo.QUESTIONS
    assert all(answer in texts for _, answer in questions)
    titles = {p["metadata"]["title"] for p in paragraphs if p["text"] in {a for _, a in questions[:7]}}
    assert len(titles) == 7  # round robin: the first seven questions come from seven articles


def test_columns_line_up_with_hangul():
    """Hangul takes two terminal columns: cells are cut and padded by columns, not characters."""
    import unicodedata

    def cols(text):
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    for text in ["알렉산더 메이그스 헤이그 2세(영어: Alexander Meigs Haig, Jr.)", "short", "한글" * 40, ""]:
        cell = demo._fit(text, 30)
        assert cols(cell) == 30
        assert cell.rstrip().endswith("…") == (cols(text) > 29)


def test_quick_demo_reranks_better_than_the_first_stage(e5_cross_encoder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default reranker resolves to the shipped one
    from rag_rerank.cli import run

    code, out, err = run(["demo", "--quick", "--store", str(tmp_path / "store"), "--device", "cpu"])
    assert code == 0, err
    assert "[4/4] reranking" in err  # progress went to stderr
    assert e5_cross_encoder.name in out
    rows = dict(re.findall(r"^(first stage \(hybrid\)|two-stage \(hybrid -> reranker -> fusion\))\s+([\d.]+)",
                           out, re.M))
    first, two_stage = float(rows["first stage (hybrid)"]), float(rows["two-stage (hybrid -> reranker -> fusion)"])
    print(out)
    assert two_stage > first
    assert out.count("질문:") == demo.SHOWN and "✔" in out


def test_cache_dir_is_set_for_the_demo_only(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_RERANK_HOME", "/elsewhere")
    with demo._model_home(str(tmp_path)):
        from rag_rerank.models import default_cache_dir

        assert default_cache_dir() == tmp_path / "models"
    import os

    assert os.environ["RAG_RERANK_HOME"] == "/elsewhere"
