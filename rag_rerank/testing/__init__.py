"""Tiny models built offline, for fast tests of code paths (yours and ours).

``tiny_albert_cross_encoder`` builds a randomly initialised ALBERT sequence
classifier with the shape of ``bongsoo/albert-small-kor-cross-encoder-v1``
(embedding 128 projected to the hidden size, one shared layer group,
``gelu_new``) scaled down, plus a unigram tokenizer trained on the Korean
sentences you give it.  It scores nonsense, but every tensor path is real.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_unigram_tokenizer(texts: Iterable[str], vocab_size: int = 800):
    """A SentencePiece-style unigram tokenizer (ALBERT's kind) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                      unk_token="[UNK]", show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def tiny_albert_config(vocab_size: int, num_labels: int = 1, **overrides):
    from transformers import AlbertConfig

    params = dict(
        vocab_size=vocab_size, embedding_size=32, hidden_size=64, num_hidden_layers=4,
        num_hidden_groups=1, inner_group_num=1, num_attention_heads=4, intermediate_size=128,
        hidden_act="gelu_new", max_position_embeddings=512, type_vocab_size=2, num_labels=num_labels,
        classifier_dropout_prob=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    params.update(overrides)
    return AlbertConfig(**params)


def tiny_albert_cross_encoder(path: str | Path, texts: Iterable[str], *, seed: int = 0,
                              vocab_size: int = 800, num_labels: int = 1, **config) -> Path:
    """Write a tiny ALBERT cross-encoder + tokenizer to ``path`` and return it."""
    import torch
    from transformers import AlbertForSequenceClassification

    path = Path(path)
    tokenizer = train_unigram_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = AlbertForSequenceClassification(
        tiny_albert_config(len(tokenizer), num_labels=num_labels, **config))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def tiny_bert_encoder(path: str | Path, texts: Iterable[str], *, seed: int = 0, vocab_size: int = 800,
                      hidden_size: int = 32, layers: int = 1, heads: int = 2) -> Path:
    """Write a tiny BERT sentence encoder (mean pooling, unit vectors) to ``path``: a bi-encoder
    ``BiEncoder(path)`` and ``ChromaStore(encoder=path)`` load in a second. Its vectors are random
    but deterministic, enough for code paths where e5's quality is not the point."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tokenizer = train_unigram_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                                 num_attention_heads=heads, intermediate_size=(2 if layers == 1 else 4) * hidden_size,
                                 max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden_size, "pooling_mode_mean_tokens": True}))
    (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    return path
