"""Padding-free passes (rag_rerank.reranker.engine.packed): the same logits as padded passes, family by family."""
from __future__ import annotations

import pytest
import torch

from rag_rerank import Reranker
from rag_rerank.testing import train_unigram_tokenizer

FAMILIES = {  # model_type -> (config class, sequence-classification class) in transformers
    "bert": ("BertConfig", "BertForSequenceClassification"),
    "albert": ("AlbertConfig", "AlbertForSequenceClassification"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification"),  # positions from pad + 1
    "electra": ("ElectraConfig", "ElectraForSequenceClassification"),
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForSequenceClassification"),  # not listed: stays padded
}


@pytest.fixture(scope="module")
def tokenizer(korean_sentences):
    return train_unigram_tokenizer(korean_sentences)


def _model(tmp_path, tokenizer, family: str, num_labels: int = 1, initializer_range: float = 0.02):
    import transformers

    config_cls, model_cls = (getattr(transformers, n) for n in FAMILIES[family])
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=160, type_vocab_size=2,
                        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, initializer_range=initializer_range,
                        **({"embedding_size": 16} if family == "albert" else {}))
    torch.manual_seed(0)
    model_cls(config).save_pretrained(str(tmp_path / family))
    tokenizer.save_pretrained(str(tmp_path / family))
    return str(tmp_path / family)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_packed_passes_score_like_padded_ones(family, tmp_path, tokenizer, korean_sentences):
    """Pairs of very different lengths and a document long enough for several windows, one pass and
    several: every score equals the padded pass's (positions restart per pair, attention stays
    inside each pair, the head reads each pair's first token)."""
    path = _model(tmp_path, tokenizer, family, num_labels=2 if family == "electra" else 1)
    docs = ["짧다"] + korean_sentences[:20] + [" ".join(korean_sentences[:30])]
    packed = Reranker(path, max_length=96, batch_size=4)  # 384 tokens a pass: several passes
    padded = Reranker(path, max_length=96, batch_size=4, pack=False)
    assert packed.engine.describe()["engine"] == ("padded" if family == "deberta-v2" else "packed")
    assert padded.engine.describe()["engine"] == "padded"
    for query in ("서울의 날씨는?", "한국어 질문 " * 30):  # a long query is cut to its share
        want = padded.score(query, docs, raw=True)
        assert packed.score(query, docs, raw=True) == pytest.approx(want, abs=2e-5)
    assert len(packed.engine.plan(packed._pairs.lengths(packed._pairs.windows([(0, 0, "질문", docs)])))) > 1


def test_packed_passes_fill_a_token_budget_of_real_tokens(tiny_ce, korean_sentences):
    r = Reranker(str(tiny_ce), batch_size=4, max_length=64)  # 256 real tokens a pass
    docs = [s * (1 + i % 5) for i, s in enumerate(korean_sentences[:40])]
    lengths = r._pairs.lengths(r._pairs.windows([(0, 0, "질문", docs)]))
    batches = r.engine.plan(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 256 for b in batches)
    # full: a pass ends only where the next pair would not fit
    assert all(sum(lengths[i] for i in b) + lengths[n[0]] > 256 for b, n in zip(batches, batches[1:]))


def test_packed_inputs_restart_positions_and_mark_pairs():
    import numpy as np

    from rag_rerank.reranker.engine.packed import inputs

    ids = [np.array([5, 6, 7]), np.array([8]), np.array([9, 10])]
    out = inputs(ids, [np.zeros(3, int), np.ones(1, int), np.zeros(2, int)], offset=2, spans=True)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert out["position_ids"].tolist() == [[2, 3, 4, 2, 2, 3]]
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 4, 6] and out["max_length_q"] == 3
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 1, 0, 0]]
    assert out["rag_rerank_spans"] == [(0, 3), (3, 4), (4, 6)]
    assert "rag_rerank_spans" not in inputs(ids, None, 0, spans=False)


def test_packing_where_it_pays(tmp_path, tokenizer):
    """CPU: packed (the per-pair loop beats padding); CUDA: only with the flash kernel (fp16/bf16), not
    in fp32, where the loop's many small kernels cost more than the padding (decided without a GPU)."""
    from transformers import AutoModelForSequenceClassification

    from rag_rerank import packed

    path = _model(tmp_path, tokenizer, "bert")
    load = lambda: AutoModelForSequenceClassification.from_pretrained(path)  # noqa: E731
    cuda = torch.device("cuda")
    assert packed.enable(load(), cuda, torch.float32) is False
    model = load()
    assert packed.enable(model, cuda, torch.float16) is True and model.config._attn_implementation == packed.ATTENTION
    assert packed.uses_flash(model, cuda, torch.bfloat16) and not packed.uses_flash(model, torch.device("cpu"),
                                                                                      torch.float16)
    assert packed.enable(load(), torch.device("cpu"), torch.float32) is True


@pytest.mark.parametrize("family", ["bert", "albert", "xlm-roberta", "electra"])
def test_bucketed_passes_score_like_the_pass_they_grow(family, tmp_path, tokenizer, korean_sentences):
    """A pass grown to its bucket shape (pad pairs, empty pairs, the fixed max_length_q that a CUDA
    graph records) gives every real pair the logits of the pass as it was (CPU: the per-pair loop)."""
    from rag_rerank.reranker.engine.packed import bucket

    # large weights: pair scores far apart, so a token seen across a boundary shows
    r = Reranker(_model(tmp_path, tokenizer, family, initializer_range=0.5), max_length=96, batch_size=4)
    docs = ["짧다"] + korean_sentences[:9]
    windows = r._pairs.windows([(0, 0, "서울의 날씨는?", docs)])
    engine = r.engine
    assert engine.describe()["engine"] == "packed" and engine.host_spans  # the CPU's per-pair loop
    for idx in engine.plan(r._pairs.lengths(windows)):
        arrays = engine.batch(r._pairs, windows, idx)
        grown = bucket(arrays, r._pairs.pad_id, engine.position_offset, r.max_length)
        assert grown["input_ids"].shape[1] > arrays["input_ids"].shape[1]  # this test grows every pass
        with torch.inference_mode():
            want = r.model(**engine.to_device(arrays)).logits
            got = r.model(**engine.to_device(grown)).logits
        assert got.shape[0] == len(grown["cu_seq_lens_q"]) - 1 > len(idx)
        assert got[: len(idx)].flatten().tolist() == pytest.approx(want.flatten().tolist(), abs=2e-5)


def test_buckets_are_few_and_waste_little():
    import numpy as np

    from rag_rerank.reranker.engine.packed import bucket, inputs

    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(300):
        lengths = rng.integers(3, 513, size=int(rng.integers(1, 200)))
        arrays = inputs([np.full(n, 7) for n in lengths], None, offset=2, spans=False)
        grown = bucket(arrays, pad_id=1, offset=2, max_length=512)
        tokens, total = int(lengths.sum()), grown["input_ids"].shape[1]
        cu = grown["cu_seq_lens_q"]
        assert total <= max(128, 1.125 * tokens) and cu[-1] == total and (np.diff(cu) >= 0).all()
        assert (np.diff(cu) <= 512).all() and grown["max_length_q"] == 512  # no pair beyond max_length
        assert cu.tolist()[: len(lengths) + 1] == arrays["cu_seq_lens_q"].tolist()
        assert grown["position_ids"].shape == (1, total) and grown["position_ids"].max() < 512 + 2
        assert (grown["input_ids"][0, tokens:] == 1).all()
        slots = len(cu) - 1
        assert slots & (slots - 1) == 0 and slots < 2 * (len(lengths) + 2) + 4
        shapes.add((total, slots))
    assert len(shapes) < 120  # 300 passes of 1-199 pairs: few shapes to record
