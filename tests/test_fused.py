"""Feed-forward bias + activation in the GEMM epilogue (rag_rerank.reranker.cuda.fused): the model's own logits,
its own parameters and state-dict keys, family by family. On a CPU ``torch._addmm_activation``
computes exact GELU (cuBLASLt's is the tanh approximation: the GPU bench's drift column checks it)."""
from __future__ import annotations

import copy

import pytest
import torch

from rag_rerank import Reranker, fused

FAMILIES = {  # model_type -> (config class, sequence-classification class, hidden_act)
    "bert": ("BertConfig", "BertForSequenceClassification", "gelu"),
    "bert-relu": ("BertConfig", "BertForSequenceClassification", "relu"),
    "albert": ("AlbertConfig", "AlbertForSequenceClassification", "gelu_new"),  # one layer shared by all passes
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification", "gelu"),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", "gelu_pytorch_tanh"),
}


def _model(family: str, hidden_act: str | None = None):
    import transformers

    config_name, model_name, act = FAMILIES[family]
    config = getattr(transformers, config_name)(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=1, pad_token_id=1, hidden_act=hidden_act or act,
        **({"embedding_size": 16} if family == "albert" else {}))
    torch.manual_seed(0)
    return getattr(transformers, model_name)(config).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fused_feed_forwards_give_the_models_logits(family):
    model = _model(family)
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    count = fused.enable(model)
    assert count == (1 if family == "albert" else 3)  # ALBERT's one shared layer, each BERT-family layer
    assert list(model.state_dict()) == keys  # a fused model saves and loads like the original
    linears = [m for m in model.modules() if isinstance(m, fused.FusedLinear)]
    assert len(linears) == count and all(m.gelu is (FAMILIES[family][2] != "relu") for m in linears)
    ids = torch.randint(2, 120, (3, 17))
    with torch.inference_mode():
        got, want = model(input_ids=ids).logits, reference(input_ids=ids).logits
    # exact GELU and ReLU fuse to the same function here; the tanh GELUs meet the CPU's exact one
    tolerance = 1e-3 if FAMILIES[family][2] in ("gelu_new", "gelu_pytorch_tanh") else 1e-5
    torch.testing.assert_close(got, want, atol=tolerance, rtol=0)


def test_fused_linear_shares_the_original_parameters():
    model = _model("bert")
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    fused.enable(model)
    layer = model.bert.encoder.layer[0].intermediate
    assert layer.dense.weight is weight and isinstance(layer.intermediate_act_fn, torch.nn.Identity)


def test_an_activation_the_epilogue_lacks_is_left_alone():
    model = _model("bert", hidden_act="silu")
    assert fused.enable(model) == 0
    assert not any(isinstance(m, fused.FusedLinear) for m in model.modules())


def test_reranker_fuses_on_a_gpu_in_half_precision_only(tiny_ce):
    """On a CPU (fp32) the reranker keeps the model's own activation: fp32 is the reference."""
    r = Reranker(str(tiny_ce))
    assert r.engine.describe()["fused_ffn"] == 0 and not any(isinstance(m, fused.FusedLinear) for m in r.model.modules())
    assert Reranker(str(tiny_ce), dtype="bf16").engine.describe()["fused_ffn"] == 0  # bf16 on a CPU: no cuBLASLt epilogue to gain
