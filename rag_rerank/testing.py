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
                      hidden_size: int = 32) -> Path:
    """Write a tiny BERT sentence encoder (mean pooling, unit vectors) to ``path``: a bi-encoder
    ``BiEncoder(path)`` and ``ChromaStore(encoder=path)`` load in a second. Its vectors are random
    but deterministic, enough for code paths where e5's quality is not the point."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tokenizer = train_unigram_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=2 * hidden_size,
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


def quick_cross_encoder(base: str | Path, pairs, corpus, out: str | Path, *, steps: int = 30,
                        batch: int = 8, seed: int = 0) -> Path:
    """A few BCE steps on (query, positive) pairs with one random negative each, CPU-friendly.

    Embeddings stay frozen (e5's 96M embedding rows dominate an Adam step on CPU). Enough to
    turn the offline e5 into a usable reranker for tests and examples; real training is
    :mod:`rag_rerank.train`. (Training only the top 4 of e5's 12 layers was tried: 1.5x faster on
    2 cores, but MRR@10 0.52 instead of 0.87 on KorNLI test pairs: not kept.)
    """
    import random

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rng = random.Random(seed)
    torch.manual_seed(seed)
    pairs, corpus = list(pairs), list(corpus)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    for name, param in model.named_parameters():
        param.requires_grad = ".embeddings." not in f".{name}"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    model.train()
    for _ in range(steps):
        queries, docs, labels = [], [], []
        for query, positive in rng.sample(pairs, batch):
            queries += [query, query]
            docs += [positive, rng.choice(corpus)]
            labels += [1.0, 0.0]
        enc = tok(queries, docs, truncation=True, max_length=128, padding=True, return_tensors="pt")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits[:, 0], torch.tensor(labels))
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = Path(out)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def kornli_pairs(data_dir: str | Path, split: str = "dev") -> tuple[list[tuple[str, str]], list[str]]:
    """(entailed hypothesis, premise) pairs and the distinct premises of a KorNLI (XNLI ko) split."""
    path = Path(data_dir) / "kornli" / f"xnli.{split}.ko.tsv"
    rows = [line.rstrip("\n").split("\t") for line in path.open(encoding="utf-8")][1:]
    return [(r[1], r[0]) for r in rows if r[2] == "entailment"], sorted({r[0] for r in rows})


def kornli_quick_reranker(data_dir: str | Path, *, steps: int = 30, cache_dir: str | Path | None = None) -> Path:
    """The offline multilingual-e5-small after :func:`quick_cross_encoder` on KorNLI dev, built once
    per data file and step count (cached beside the materialised models): a usable Korean reranker
    for tests and examples on a machine without the model hub."""
    import hashlib

    from .models import default_cache_dir, materialize

    source = Path(data_dir) / "kornli" / "xnli.dev.ko.tsv"
    digest = hashlib.sha1(source.read_bytes()).hexdigest()[:10]
    out = Path(cache_dir or default_cache_dir()) / f"kornli-e5-cross-encoder-{steps}-{digest}"
    if (out / "config.json").exists():
        return out
    pairs, premises = kornli_pairs(data_dir)
    print(f"[rag-rerank] fine-tuning the offline multilingual-e5-small for {steps} steps on KorNLI dev "
          "(CPU, about a minute; cached)")
    tmp = out.with_name(out.name + ".partial")
    quick_cross_encoder(materialize("multilingual-e5-small", cache_dir=cache_dir), pairs, premises, tmp, steps=steps)
    tmp.rename(out)  # a run killed half-way leaves no model that looks finished
    return out
