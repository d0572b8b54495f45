"""The compact delta (rag_rerank.models.delta): a merged LoRA fine-tune stored as low-rank fp16 factors
+ its head, rebuilt on the base it came from, and refused on any other base."""
import json

import pytest
import torch

from rag_rerank.models.delta import DELTA_FILE, DELTA_INFO, apply_delta, export_delta


def _fine_tune_like_lora(base, out, rank, seed=0):
    """What `rag-rerank train --lora` (merged) writes: the base wrapped for classification, a LoRA
    update of rank ``rank`` on every linear layer merged in, and a trained head."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=2 * rank,
                                             target_modules=["query", "key", "value", "dense"],
                                             modules_to_save=["classifier"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(0, 0.05)
    model = model.merge_and_unload()
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


def _logits(path, pairs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    batch = tok([q for q, _ in pairs], [d for _, d in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0]


PAIRS = [("한글은 누가 만들었나요?", "세종대왕이 한글을 창제하였다."), ("환불은 어떻게 하나요?", "배송 문의는 고객센터로."),
         ("서울의 인구는?", "서울특별시는 대한민국의 수도이다.")]


def test_delta_rebuilds_the_fine_tuned_model(tiny_encoder, tmp_path):
    fine = _fine_tune_like_lora(tiny_encoder, tmp_path / "fine", rank=4)
    info = export_delta(fine, tiny_encoder, tmp_path / "delta", rank=4)
    assert info["factored"], "the merged LoRA updates are stored as factors"
    assert all(f["relative_error"] < 1e-3 for f in info["factored"])
    assert not any("embeddings" in w for w in info["whole"]), "LoRA leaves the embeddings alone"
    stored = (tmp_path / "delta" / DELTA_FILE).stat().st_size
    full = (fine / "model.safetensors").stat().st_size
    assert stored < full / 2
    rebuilt = apply_delta(tmp_path / "delta", tiny_encoder, tmp_path / "rebuilt")
    want, got = _logits(fine, PAIRS), _logits(rebuilt, PAIRS)
    diff = float((want - got).abs().max())
    print(f"max abs logit diff after rebuilding from the delta: {diff:.2e}")
    assert diff < 1e-3
    assert float((want - _logits(tiny_encoder_classifier(tiny_encoder, tmp_path), PAIRS)).abs().max()) > 1e-2


def tiny_encoder_classifier(base, tmp_path):
    """The base with an untouched head: a control that the delta changed something."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    out = tmp_path / "control"
    AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


def test_delta_refuses_another_base(tiny_encoder, tmp_path, korean_sentences):
    from rag_rerank.testing import tiny_bert_encoder

    fine = _fine_tune_like_lora(tiny_encoder, tmp_path / "fine", rank=4)
    export_delta(fine, tiny_encoder, tmp_path / "delta", rank=4)
    other = tiny_bert_encoder(tmp_path / "other", korean_sentences, seed=7)
    with pytest.raises(ValueError, match="other base weights"):
        apply_delta(tmp_path / "delta", other, tmp_path / "rebuilt")


def test_update_above_the_rank_is_stored_whole(tiny_encoder, tmp_path):
    fine = _fine_tune_like_lora(tiny_encoder, tmp_path / "fine", rank=8)
    info = export_delta(fine, tiny_encoder, tmp_path / "delta", rank=2)  # rank 8 updates, 2 allowed
    assert info["whole"] and not info["factored"]
    rebuilt = apply_delta(tmp_path / "delta", tiny_encoder, tmp_path / "rebuilt")
    assert float((_logits(fine, PAIRS) - _logits(rebuilt, PAIRS)).abs().max()) < 1e-3
    assert json.loads((tmp_path / "delta" / DELTA_INFO).read_text())["rank"] == 2


def test_the_pipeline_files_travel_with_the_delta():
    from rag_rerank import known_queries, model_settings
    from rag_rerank.models.delta import MODEL_FILES

    assert {model_settings.CONFIG_FILE, known_queries.DATA_FILE} <= set(MODEL_FILES)


def test_ship_packages_a_trained_model_with_reference_logits_that_the_delta_reproduces(tiny_encoder, tmp_path,
                                                                                        capsys):
    """`python -m rag_rerank.train.ship` (how the shipped reranker is made): the delta, the training metrics
    less the loss curve, and the trained model's logits on Korean pairs, which the rebuilt model reproduces."""
    from rag_rerank import Reranker
    from rag_rerank.train import ship

    fine = _fine_tune_like_lora(tiny_encoder, tmp_path / "fine", rank=4)
    with pytest.raises(FileNotFoundError, match="TRAINED_DIR .*metrics.json"):
        ship.main([str(fine), str(tiny_encoder), str(tmp_path / "nope")])
    (fine / "metrics.json").write_text(json.dumps({"steps": 3, "history": [{"loss": 1.0}]}))
    assert ship.main([str(fine), str(tiny_encoder), str(tmp_path / "out"), "--rank", "4", "--base-name", "tiny"]) == 0
    printed = json.loads(capsys.readouterr().out)
    out = tmp_path / "out"
    assert printed["factored"] and printed["bytes"] == (out / DELTA_FILE).stat().st_size
    assert json.loads((out / "training_metrics.json").read_text()) == {"steps": 3}
    assert json.loads((out / DELTA_INFO).read_text())["base"] == "tiny"
    reference = json.loads((out / "reference.json").read_text())["pairs"]
    pairs = ship.reference_pairs()  # two per demo article: its paragraph and the next one
    assert [(r["query"], r["document"]) for r in reference] == pairs and pairs[0][0] == pairs[1][0] != ""
    rebuilt = Reranker(str(apply_delta(out, tiny_encoder, tmp_path / "rebuilt")), dtype=torch.float32)
    got = [rebuilt.score(r["query"], [r["document"]], raw=True)[0] for r in reference[:6]]
    assert got == pytest.approx([r["logit"] for r in reference[:6]], abs=1e-3)
