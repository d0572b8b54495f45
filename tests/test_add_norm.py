"""Residual add + LayerNorm in one Triton kernel (rag_rerank.reranker.cuda.add_norm): the kernel itself, run by
Triton's interpreter on the CPU, against eager ``LayerNorm(x + residual)``; the block swap, family by
family, against the model's own logits and state-dict keys. The GPU bench's drift column checks it on CUDA."""
from __future__ import annotations

import copy

import pytest
import torch

from rag_rerank import Reranker, add_norm

FAMILIES = {  # model_type -> (config class, sequence-classification class)
    "bert": ("BertConfig", "BertForSequenceClassification"),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification"),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification"),
    "camembert": ("CamembertConfig", "CamembertForSequenceClassification"),
}


@pytest.fixture(scope="module")
def interpreted():
    """The launcher around the kernel as Triton's interpreter runs it (numpy, on CPU tensors; conftest
    sets TRITON_INTERPRET before triton is first imported)."""
    import os

    assert os.environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET before triton is imported"
    return add_norm.launcher(add_norm._build())


def _model(family: str):
    import transformers

    config_name, model_name = FAMILIES.get(family, ("AlbertConfig", "AlbertForSequenceClassification"))
    config = getattr(transformers, config_name)(
        vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=1, pad_token_id=1, **({"embedding_size": 16} if family == "albert" else {}))
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():  # LayerNorms start as (1, 0): give them weights of their own
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("width, rows", [(384, 37), (48, 1), (48, 8), (100, 5)])
def test_kernel_is_layernorm_of_the_sum_in_fp32(interpreted, width, rows):
    """Widths below a power of two (masked columns) and row counts off the program's 4 (masked rows)."""
    torch.manual_seed(width + rows)
    norm = torch.nn.LayerNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, residual = torch.randn(1, rows, width) * 3, torch.randn(1, rows, width)
    got = interpreted(x, residual, norm)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, norm(x + residual), atol=1e-5, rtol=1e-5)


def test_kernel_adds_in_half_precision_as_eager_does(interpreted):
    """fp16: the sum rounded to fp16 before the norm, so the result is within half a unit of eager's."""
    torch.manual_seed(1)
    norm = torch.nn.LayerNorm(384).half()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, residual = torch.randn(64, 384).half() * 4, torch.randn(64, 384).half()
    got, want = interpreted(x, residual, norm).float(), norm(x + residual).float()
    assert ((got - want).abs() <= torch.finfo(torch.float16).eps * want.abs().clamp(min=1)).all()


def test_kernel_does_not_change_its_inputs(interpreted):
    norm = torch.nn.LayerNorm(48)
    x, residual = torch.randn(2, 5, 48), torch.randn(2, 5, 48)
    before = x.clone(), residual.clone()
    interpreted(x, residual, norm)
    assert torch.equal(x, before[0]) and torch.equal(residual, before[1])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_swapped_blocks_give_the_models_logits(interpreted, family):
    model = _model(family)
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    calls = []

    def counted(x, residual, norm):
        calls.append(x.shape)
        return interpreted(x, residual, norm)

    assert add_norm.enable(model, counted, devices=("cpu",)) == 6  # attention + feed-forward, 3 layers
    assert list(model.state_dict()) == keys  # a swapped model saves and loads like the original
    blocks = [m for m in model.modules() if isinstance(m, add_norm.AddNorm)]
    assert len(blocks) == 6 and not any(b.training for b in blocks)  # in eval, as the model they joined
    ids = torch.randint(2, 120, (3, 17))
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert calls == [torch.Size([3, 17, 48])] * 6  # every block ran the kernel, none the eager ops


def test_blocks_run_the_kernel_only_on_its_devices():
    calls = []
    model = _model("bert")
    add_norm.enable(model, lambda x, r, norm: calls.append(x.shape) or norm(x + r))  # devices: cuda only
    with torch.inference_mode():
        model(input_ids=torch.randint(2, 120, (1, 9)))
    assert calls == []  # a CPU tensor takes the eager ops
    block = model.bert.encoder.layer[0].output
    block.devices = ("cpu",)
    block.run = lambda x, r, norm: calls.append(x.shape) or norm(x + r)
    with torch.inference_mode():
        model(input_ids=torch.randint(2, 120, (1, 9)))
    assert calls == [torch.Size([1, 9, 48])]
    model.train()
    model(input_ids=torch.randint(2, 120, (1, 9)))
    assert len(calls) == 1  # training: eager, where dropout is not the identity


def test_albert_is_left_alone():
    """ALBERT's add + LayerNorm sit inside its attention and layer forwards: no block to swap."""
    model = _model("albert")
    assert add_norm.enable(model, lambda *a: None) == 0
    assert not any(isinstance(m, add_norm.AddNorm) for m in model.modules())


def test_reranker_swaps_on_a_gpu_in_half_precision_only(tiny_ce):
    """On a CPU the reranker keeps the model's own blocks (there is no kernel to run there)."""
    assert add_norm.available()  # the dev install brings Triton, so the tests above ran the kernel
    for dtype in ("fp32", "bf16"):
        r = Reranker(str(tiny_ce), dtype=dtype)
        assert r.engine.describe()["fused_norms"] == 0 and not any(isinstance(m, add_norm.AddNorm) for m in r.model.modules())
