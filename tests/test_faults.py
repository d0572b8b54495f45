"""Bad input and faults (issue 17): every case a clear typed error naming what is wrong, or a defined
result; never a silent wrong answer or a traceback from deep inside a dependency. Tiny models only."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rag_rerank import InMemoryCorpus, Reranker
from rag_rerank.cli import run as run_cli
from rag_rerank.retrieval.lexical_index import LexicalIndex
from rag_rerank.retrieval.pipeline import TwoStageRetriever
from rag_rerank.retrieval.store import ChromaStore, iter_documents, lexical_dir
from rag_rerank.train import data as train_data
from rag_rerank.types import Document


@pytest.fixture(scope="module")
def rr(tiny_ce):
    return Reranker(str(tiny_ce), batch_size=4, max_length=64)


def _store(path, tiny_encoder):
    s = ChromaStore(path, "faults", encoder=str(tiny_encoder))
    s.add(["서울은 대한민국의 수도이다.", "부산은 항구 도시이다.", "배송 문의는 PayPal."])
    return s


@pytest.fixture
def store(tmp_path, tiny_encoder):
    return _store(tmp_path / "store", tiny_encoder)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, tiny_encoder):
    """One store for the matrix: its cases fail before writing, or write ids no other case reads."""
    return _store(tmp_path_factory.mktemp("faults") / "store", tiny_encoder)


def _docs(n=3):
    return ["서울은 수도이다.", "부산은 항구이다.", "대구는 분지이다."][:n]


# (case id, call(rr, store, tiny_ce, tmp_path), exception type, message fragment)
CASES = [
    # Reranker: queries and documents
    ("query None", lambda rr, *_: rr.score(None, _docs()), ValueError, "query must be a non-empty string"),
    ("query empty", lambda rr, *_: rr.score("  ", _docs()), ValueError, "whitespace-only"),
    ("query bytes", lambda rr, *_: rr.score(b"q", _docs()), ValueError, "got bytes"),
    ("docs a string", lambda rr, *_: rr.score("q", "문서"), TypeError, "not a single string"),
    ("docs a dict", lambda rr, *_: rr.score("q", {"a": "문서"}), TypeError, "not a dict"),
    ("docs a set (no order for scores or indexes)", lambda rr, *_: rr.rerank("q", {"가", "나"}), TypeError, "not a set"),
    ("docs an int", lambda rr, *_: rr.score("q", 3), TypeError, "got int"),
    ("doc None", lambda rr, *_: rr.score("q", ["a", None]), TypeError, "docs[1] is None"),
    ("doc int", lambda rr, *_: rr.score("q", ["a", 5]), TypeError, "docs[1] is int"),
    ("doc lone surrogate", lambda rr, *_: rr.score("q", ["a", "b\ud800"]), ValueError, "docs[1] holds a lone surrogate"),
    ("query lone surrogate", lambda rr, *_: rr.score("\udfff q", ["a"]), ValueError, "query holds a lone surrogate"),
    ("top_n 0", lambda rr, *_: rr.rerank("q", _docs(), top_n=0), ValueError, "top_n must be a positive integer"),
    ("top_n bool", lambda rr, *_: rr.rerank("q", _docs(), top_n=True), ValueError, "top_n must be a positive integer"),
    ("queries a string", lambda rr, *_: rr.score_many("abc", [["a"]] * 3), TypeError, "not a single string"),
    # one string where a batch is wanted was read as its characters: '서울' embedded or searched as two queries
    ("embed_queries one string", lambda rr, s, *_: s.encoder.embed_queries("서울"), TypeError, "not a single string"),
    ("candidates_many one string", lambda rr, s, *_: InMemoryCorpus(["서울", "부산"], mode="bm25").candidates_many(
        "서울", 2), TypeError, "queries must be a sequence of strings, not a single string"),
    ("find_texts one string", lambda rr, s, *_: s.find_texts("부산"), TypeError,
     "texts must be a sequence of strings, not a single string"),
    ("KoreanBM25.add strings", lambda *_: __import__("rag_rerank.retrieval.lexical", fromlist=["KoreanBM25"])
     .KoreanBM25("whitespace").add("ab", "cd"), TypeError, "ids must be a sequence of strings, not a single string"),
    ("queries vs lists", lambda rr, *_: rr.score_many(["a", "b"], [["x"]]), ValueError, "2 queries but 1 document lists"),
    # Reranker: construction
    ("max_length 0", lambda rr, s, ce, tmp: Reranker(str(ce), max_length=0), ValueError, "leaves no room for a document"),
    ("aggregate", lambda rr, s, ce, tmp: Reranker(str(ce), aggregate="sum"), ValueError, "aggregate must be"),
    ("overlap 1", lambda rr, s, ce, tmp: Reranker(str(ce), window_overlap=1.0), ValueError, "window_overlap"),
    ("batch 0", lambda rr, s, ce, tmp: Reranker(str(ce), batch_size=0), ValueError, "batch_size must be >= 1"),
    ("backend", lambda rr, s, ce, tmp: Reranker(str(ce), backend="tensorrt"), ValueError, "backend must be"),
    ("cuda without a GPU", lambda rr, s, ce, tmp: Reranker(str(ce), device="cuda"), ValueError, "no CUDA GPU is visible"),
    ("cuda:3 without a GPU", lambda rr, s, ce, tmp: Reranker(str(ce), device="cuda:3"), ValueError, "no CUDA GPU"),
    ("unknown device", lambda rr, s, ce, tmp: Reranker(str(ce), device="tpu"), ValueError, "unknown device 'tpu'"),
    ("onnx on cuda", lambda rr, s, ce, tmp: Reranker(str(ce), backend="onnx", device="cuda"), ValueError, "runs on the CPU"),
    ("missing model dir", lambda rr, s, ce, tmp: Reranker(str(tmp / "nope")), OSError, "does not exist"),
    ("model without tokenizer", lambda rr, s, ce, tmp: Reranker(str(_no_tokenizer(ce, tmp))), ValueError,
     "no tokenizer files"),
    # store
    ("add one string", lambda rr, s, *_: s.add("문서"), TypeError, "not a single string"),
    ("add None text", lambda rr, s, *_: s.add([{"text": None}]), TypeError, "documents[0] text is NoneType"),
    ("add an int", lambda rr, s, *_: s.add([3]), TypeError, "documents[0] is int"),
    ("nested metadata", lambda rr, s, *_: s.add(["a"], metadatas=[{"k": {"x": 1}}]), ValueError, "metadata[0]['k']"),
    ("metadata not a dict", lambda rr, s, *_: s.add(["a"], metadatas=["x"]), TypeError, "metadata[0] must be a mapping"),
    ("metadatas length", lambda rr, s, *_: s.add(["a", "b"], metadatas=[{}]), ValueError, "2 documents but 1 metadatas"),
    ("ids length", lambda rr, s, *_: s.add(["a", "b"], ids=["x"]), ValueError, "2 documents but 1 ids"),
    # a string of ids was read as its characters ('ab' for two documents: ids 'a' and 'b'), a dict of metadatas
    # by its keys (a KeyError), a set of documents paired with metadatas in no order
    ("ids one string", lambda rr, s, *_: s.add(["a", "b"], ids="ab"), TypeError, "ids must be a list with one item per document, not a str"),
    ("metadatas one dict", lambda rr, s, *_: s.add(["a", "b"], metadatas={"x": 1, "y": 2}), TypeError,
     "metadatas must be a list with one item per document, not a dict"),
    ("add a set", lambda rr, s, *_: s.add({"a", "b"}, metadatas=[{"k": 1}, {"k": 2}]), TypeError, "not a set"),
    ("id with new text", lambda rr, s, *_: (s.add(["a"], ids=["x"]), s.add(["b"], ids=["x"])), ValueError,
     "id 'x' is stored with other text"),
    ("on_conflict", lambda rr, s, *_: s.add(["a"], on_conflict="merge"), ValueError, "on_conflict must be"),
    ("search k 0", lambda rr, s, *_: s.search("서울", k=0), ValueError, "k must be a positive integer"),
    ("search empty query", lambda rr, s, *_: s.search_lexical(""), ValueError, "query must be a non-empty string"),
    ("delete nothing", lambda rr, s, *_: s.delete(), ValueError, "needs ids or a where filter"),
    ("open a store not there", lambda rr, s, ce, tmp: ChromaStore(tmp / "typo", create=False), FileNotFoundError,
     "no store there"),
    ("open a collection not there", lambda rr, s, ce, tmp: ChromaStore(s.path, "typo", create=False,
                                                                       encoder=s.encoder), ValueError,
     "no collection 'typo'"),
    # retriever
    ("retrieve top_n 0", lambda rr, s, *_: TwoStageRetriever(s, rr).retrieve("서울", top_n=0), ValueError,
     "top_n must be a positive integer"),
    ("candidate_k 0", lambda rr, s, *_: TwoStageRetriever(s, rr, candidate_k=0), ValueError, "candidate_k"),
    ("candidates k 0", lambda rr, s, *_: TwoStageRetriever(s, rr).candidates("서울", k=0), ValueError, "k must be"),
    # framework adapters
    ("llama-index top_n 0", lambda rr, *_: _llama(rr, top_n=0), ValueError, "top_n"),
    ("llama-index no query", lambda rr, *_: _llama(rr).postprocess_nodes([]), ValueError, "needs the query"),
    ("langchain top_n 0", lambda rr, *_: _langchain(rr, top_n=0), ValueError, "top_n"),
    ("langchain empty query", lambda rr, *_: _langchain(rr).compress_documents([], "  "), ValueError,
     "whitespace-only"),
    # loaders
    ("index a csv", lambda rr, s, ce, tmp: list(iter_documents(_file(tmp, "a.csv", "x,y\n"))), ValueError,
     "index reads .jsonl"),
    ("index bad json line", lambda rr, s, ce, tmp: list(iter_documents(_file(tmp, "a.jsonl", '{"text": "a"}\n{x\n'))),
     ValueError, "a.jsonl:2: not valid JSON"),
    ("index json not an array", lambda rr, s, ce, tmp: list(iter_documents(_file(tmp, "a.json", '{"text": "a"}'))),
     ValueError, "must hold an array"),
    ("index not utf-8", lambda rr, s, ce, tmp: list(iter_documents(_file(tmp, "a.txt", "줄\n".encode("cp949"), raw=True))),
     ValueError, "a.txt:1: not UTF-8"),
    ("index missing file", lambda rr, s, ce, tmp: list(iter_documents(tmp / "none.jsonl")), FileNotFoundError,
     "does not exist"),
    ("train csv label missing", lambda rr, s, ce, tmp: train_data.load(_file(tmp, "t.csv", "query,document,label\n"
                                                                          "q,d,1\nq2,d2,\n")), ValueError,
     "t.csv:3: 'label' is empty"),
    ("train csv header only", lambda rr, s, ce, tmp: train_data.load(_file(tmp, "t.csv", "query,document,label\n")),
     ValueError, "no rows"),
    ("train label out of range", lambda rr, s, ce, tmp: train_data.load(_file(tmp, "t.jsonl", '{"query": "q", '
                                                                             '"document": "d", "label": 3}\n')),
     ValueError, "outside [0, 1]"),
    # issue 37: the second probe
    ("add one id twice, other texts", lambda rr, s, *_: s.add(["가 문서", "나 문서"], ids=["dup", "dup"]), ValueError,
     "id 'dup' is given twice in one call (documents[0] and documents[1])"),
    ("metadata inf", lambda rr, s, *_: s.add(["가 문서"], metadatas=[{"x": float("inf")}], ids=["inf"]), ValueError,
     "metadata[0]['x'] is inf"),
    ("metadata nan", lambda rr, s, *_: s.add(["가 문서"], metadatas=[{"x": float("nan")}], ids=["nan"]), ValueError,
     "is nan"),
    ("id None in ids", lambda rr, s, *_: s.get(["a", None]), TypeError, "ids[1] is NoneType"),
    ("ids bytes", lambda rr, s, *_: s.delete(b"doc1"), TypeError, "ids must be a string or a sequence"),
    ("where not a dict", lambda rr, s, *_: s.search("서울", 2, where="source=faq"), ValueError, "where must be a dict"),
    ("where bad operator", lambda rr, s, *_: s.search("서울", 2, where={"$bad": 1}), ValueError, 'where {"$bad": 1}'),
    ("where two operators", lambda rr, s, *_: s.get(where={"a": {"$gt": 1, "$lt": 5}}), ValueError, "where {"),
    ("max_query_fraction 0", lambda rr, s, ce, tmp: Reranker(str(ce), max_query_fraction=0), ValueError,
     "max_query_fraction must be in (0, 1]"),
    ("max_query_fraction -1", lambda rr, s, ce, tmp: Reranker(str(ce), max_query_fraction=-1), ValueError,
     "max_query_fraction must be in (0, 1]"),
    ("max_query_fraction nan", lambda rr, s, ce, tmp: Reranker(str(ce), max_query_fraction=float("nan")), ValueError,
     "max_query_fraction must be in (0, 1]"),
    ("batch_size a string", lambda rr, s, ce, tmp: Reranker(str(ce), batch_size="8"), ValueError,
     "batch_size must be an integer, got '8'"),
    ("max_length a string", lambda rr, s, ce, tmp: Reranker(str(ce), max_length="512"), ValueError,
     "max_length must be an integer, got '512'"),
    ("window_overlap a string", lambda rr, s, ce, tmp: Reranker(str(ce), window_overlap="0.2"), ValueError,
     "window_overlap must be a number"),
    ("settings truncated", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"fusion": {"weight": 0.'), ValueError,
     "rag_rerank.json: not valid JSON"),
    ("settings string weight", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"fusion": {"weight": "0.5"}}'), ValueError,
     "rag_rerank.json: fusion weight must be a number"),
    ("settings fractional depth", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"fusion": {"depth": 2.5}}'), ValueError,
     "rag_rerank.json: fusion depth must be a whole number"),
    ("settings candidate_k", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"candidate_k": "30"}'), ValueError,
     "rag_rerank.json: candidate_k must be an integer"),
    ("train epochs -1", lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(epochs=-1),
     ValueError, "training option epochs must be > 0"),
    ("train batch 0", lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(
        per_device_batch_size=0), ValueError, "training option per_device_batch_size must be > 0"),
    ("train lr a word", lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig().replace(
        learning_rate="fast"), ValueError, "training option learning_rate must be a finite number, got 'fast'"),
    ("train negative is the positive", lambda rr, s, ce, tmp: train_data.load(_file(tmp, "np.jsonl", json.dumps(
        {"query": "q", "positive": "같은 문서", "negatives": ["다른 문서", "같은 문서"]}, ensure_ascii=False))),
     ValueError, "np.jsonl:1: '같은 문서' is both a positive and a negative"),
    ("train file cp949", lambda rr, s, ce, tmp: train_data.load(_file(tmp, "k.tsv", "query\tdocument\nq\td\n".encode()
                                                                    + "질문\t문서\n".encode("cp949"), raw=True)),
     ValueError, "k.tsv:3: not UTF-8 text"),
    ("train learning_rate 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"learning_rate": 0}), ValueError, "learning_rate must be > 0"),
    ("train gradient_accumulation_steps 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"gradient_accumulation_steps": 0}), ValueError, "gradient_accumulation_steps must be > 0"),
    ("train max_length 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"max_length": 0}), ValueError, "max_length must be > 0"),
    ("train validation_fraction 1.0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"validation_fraction": 1.0}), ValueError, "validation_fraction must be in [0, 1)"),
    ("train extra_data_share 0.0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"extra_data_share": 0.0}), ValueError, "extra_data_share must be in (0, 1)"),
    ("train warmup_steps -1"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"warmup_steps": -1}), ValueError, "warmup_steps must be >= 0"),
    ("train max_steps 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"max_steps": 0}), ValueError, "max_steps must be -1 (no cap) or > 0"),
    ("train lora_r 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"lora_r": 0}), ValueError, "lora_r must be > 0"),
    ("train candidate_k 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"candidate_k": 0}), ValueError, "candidate_k must be > 0"),
    ("train seed '42'"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"seed": '42'}), ValueError, "seed must be an integer"),
    ("train per_device_batch_size 8.0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"per_device_batch_size": 8.0}), ValueError, "per_device_batch_size must be an integer"),
    ("train learning_rate nan"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"learning_rate": float("nan")}), ValueError, "learning_rate must be a finite number"),
    ("train lora 1"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"lora": 1}), ValueError, "lora must be true or false"),
    ("train epochs 0"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"epochs": 0}), ValueError, "epochs must be > 0 (0 only with max_steps set)"),
    ("train weight_decay -0.1"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"weight_decay": -0.1}), ValueError, "weight_decay must be >= 0"),
    ("train skip_top_negatives -1"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"skip_top_negatives": -1}), ValueError, "skip_top_negatives must be >= 0"),
    ("train base_model 3"[:60], lambda *_: __import__("rag_rerank.train", fromlist=["TrainConfig"]).TrainConfig(**{"base_model": 3}), ValueError, "base_model must be a string"),
    ("window_overlap 1", lambda rr, s, ce, tmp: Reranker(str(ce), window_overlap=1), ValueError, "window_overlap must be in [0, 1)"),
    ("cache_tokens -1", lambda rr, s, ce, tmp: Reranker(str(ce), cache_tokens=-1), ValueError, "cache_tokens must be >= 0"),
    ("batch_size 2.5", lambda rr, s, ce, tmp: Reranker(str(ce), batch_size=2.5), ValueError, "batch_size must be an integer"),
    ("top_n float", lambda rr, *_: rr.rerank("q", _docs(), top_n=2.0), ValueError, "top_n must be a positive integer"),
    ("search k float", lambda rr, s, *_: s.search("서울", k=2.0), ValueError, "k must be a positive integer"),
    ("bm25 k string", lambda rr, s, *_: s.search_lexical("서울", k="3"), ValueError, "k must be a positive integer"),
    ("delete ids ints", lambda rr, s, *_: s.delete([1, 2]), TypeError, "ids[0] is int"),
    ("get ids a dict", lambda rr, s, *_: s.get({"a": 1}), TypeError, "ids must be a string or a sequence"),
    ("add id empty", lambda rr, s, *_: s.add(["가 문서"], ids=[""]), TypeError, "ids[0] is ''"),
    ("add id a list", lambda rr, s, *_: s.add(["가 문서"], ids=[["a"]]), TypeError, "ids[0] is ['a']"),
    ("where a list", lambda rr, s, *_: s.search_lexical("서울", 2, where=["faq"]), ValueError, "where must be a dict"),
    ("delete where bad", lambda rr, s, *_: s.delete(where={"$bad": 1}), ValueError, 'where {"$bad": 1}'),
    ("settings first_stage", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"first_stage": "sparse"}'), ValueError, "'first_stage' must be dense, bm25 or hybrid"),
    ("settings method", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"fusion": {"method": "mean"}}'), ValueError, "fusion method must be one of"),
    ("settings fusion a list", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"fusion": [1]}'), ValueError, "'fusion' must be an object"),
    ("settings weight 2", lambda rr, s, ce, tmp: _settings(ce, tmp, '{"fusion": {"weight": 2}}'), ValueError, "fusion weight must be in [0, 1]"),
    ("settings not an object", lambda rr, s, ce, tmp: _settings(ce, tmp, "[1, 2]"), ValueError, "expected a JSON object"),
    ("serve limits docs 0", lambda rr, *_: __import__("rag_rerank.serve").serve.Limits(max_documents=0), ValueError, "max_documents must be >= 1"),
    ("serve read timeout 0", lambda rr, *_: __import__("rag_rerank.serve").serve.Limits(read_timeout_s=0), ValueError, "read_timeout_s must be in (0, 3600]"),
    ("serve limits float", lambda rr, *_: __import__("rag_rerank.serve").serve.Limits(max_query_chars=1.5), ValueError, "max_query_chars must be an integer"),
    ("batcher pairs 0", lambda rr, *_: __import__("rag_rerank.serve").serve.MicroBatcher(rr, 5, 0), ValueError, "max_batch_pairs must be >= 1"),
    ("batcher wait -1", lambda rr, *_: __import__("rag_rerank.serve").serve.MicroBatcher(rr, -1), ValueError, "max_wait_ms must be in [0, 10000]"),
    ("fusion depth float", lambda *_: __import__("rag_rerank.retrieval.fusion").fusion.Fusion(depth=2.0), ValueError, "fusion depth must be a whole number"),
    ("fusion method", lambda *_: __import__("rag_rerank.retrieval.fusion").fusion.Fusion(method="max"), ValueError, "fusion method must be one of"),
    ("train topic a list", lambda rr, s, ce, tmp: train_data.load(_file(tmp, "tp.jsonl", '{"query": "q", "positive": "d", "topic": ["a"]}')), ValueError, "tp.jsonl:1: topic is empty or not a string"),
    ("serve max-wait inf", lambda rr, *_: _app(rr, max_wait_ms=float("inf")), ValueError,
     "max_wait_ms must be in [0, 10000]"),
    ("serve limits negative", lambda rr, *_: _app(rr, limits=__import__("rag_rerank.serve").serve.Limits(
        max_body_bytes=-1)), ValueError, "max_body_bytes must be >= 1"),
]


def _settings(ce, tmp, text):
    """A model directory whose rag_rerank.json holds ``text``, loaded as the pipeline would."""
    import shutil

    from rag_rerank import model_settings

    model = tmp / "model-with-settings"
    shutil.copytree(ce, model, dirs_exist_ok=True)
    (model / model_settings.CONFIG_FILE).write_text(text, encoding="utf-8")
    return model_settings.load(model)


def _app(rr, **kw):
    from rag_rerank.serve import create_app

    return create_app(rr, **kw)


def _llama(rr, **kw):
    from llama_index.postprocessor.rag_rerank import KoreanReranker

    return KoreanReranker(reranker=rr, **kw)


def _langchain(rr, **kw):
    from langchain_rag_rerank import KoreanCrossEncoderReranker

    return KoreanCrossEncoderReranker(reranker=rr, **kw)


def _file(tmp, name, content, raw=False):
    path = tmp / name
    path.write_bytes(content) if raw else path.write_text(content, encoding="utf-8")
    return path


def _no_tokenizer(ce, tmp):
    import shutil

    out = tmp / "weights-only"
    shutil.copytree(ce, out)
    for f in out.iterdir():
        if "token" in f.name or f.name.endswith((".model", "vocab.txt")):
            f.unlink()
    return out


@pytest.mark.parametrize("call, kind, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_typed_error(call, kind, says, rr, shared_store, tiny_ce, tmp_path):
    with pytest.raises(kind) as info:
        call(rr, shared_store, tiny_ce, tmp_path)
    assert says in str(info.value)


def test_defined_results(rr, store, tmp_path):
    """Inputs with a defined answer: empty lists, generators, upper-case and gzipped files, folders."""
    assert rr.score("q", []) == [] and rr.rerank("q", []) == []
    assert len(rr.rerank("q", (d for d in _docs()))) == 3  # a generator is read once, not lost
    assert store.add(["서울은 대한민국의 수도이다."]) and store.count() == 3  # the same document again: a no-op
    rows = [{"text": "가 문서"}, {"text": "나 문서", "metadata": {"k": 1}}]
    (tmp_path / "A.JSONL").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    (tmp_path / "c.json").write_text(json.dumps(["다 문서", {"text": "라 문서"}], ensure_ascii=False), encoding="utf-8")
    for name in ("A.JSONL", "b.jsonl.gz", "c.json"):
        docs = list(iter_documents(tmp_path / name))
        assert len(docs) == 2 and all(d.metadata["source"].endswith(name) for d in docs), name
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.TXT").write_text("첫째 문서", encoding="utf-8")
    (folder / "sub" / "two.md").write_text("둘째 문서", encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\x00")
    assert sorted(d.text for d in iter_documents(folder)) == ["둘째 문서", "첫째 문서"]
    replaced = ChromaStore(tmp_path / "store2", "x", encoder=store.encoder)
    replaced.add(["서울 이야기"], ids=["k"])
    replaced.add(["부산 이야기"], ids=["k"], on_conflict="replace")
    assert [d.text for d in replaced.get(["k"])] == ["부산 이야기"]
    assert [i for i, _ in replaced.lexical.search("부산", 5)] == ["k"] and not replaced.lexical.search("서울", 5)
    # the same through index_sources: a row of an edited source that keeps its id is its new version
    counts = replaced.index_sources([Document("대구 이야기", {"source": "f"}, "k")])
    assert [d.text for d in replaced.get(["k"])] == ["대구 이야기"] and counts["kept"] == 0


def test_second_probe_defined_results(rr, store, tmp_path):
    """Issue 37: one string is one id (never its letters); identical duplicates in one call are one
    document; numpy integers and generators are taken; a reopened store's BM25 tokenizer is checked."""
    import numpy as np

    store.add(["가 문서", "가 문서"], ids=["doc1", "doc1"])  # the same document twice: stored once
    store.add(["d 문서", "o 문서"], ids=["d", "o"])
    assert [d.id for d in store.get("doc1")] == ["doc1"]
    store.delete("doc1")
    assert store.get(["doc1"]) == [] and [d.id for d in store.get(["d", "o"])] == ["d", "o"]  # d and o kept
    assert len(rr.rerank("q", _docs(), top_n=np.int64(2))) == 2
    assert len(store.search("서울", np.int32(2))) == 2
    assert len(rr.score_many((q for q in ["가", "나"]), (d for d in [_docs(2), _docs(1)]))) == 2
    with pytest.raises(ValueError, match="tokenizer"):
        ChromaStore(store.path, "faults", encoder=store.encoder, bm25_tokenizer="whitespace", create=False)


def test_model_directories_are_checked_before_they_score(tiny_ce, tmp_path):
    """A config naming another architecture, a tokenizer larger than the embeddings, a truncated or empty
    weights file, a truncated known-queries file: each an error naming the directory or file."""
    import shutil

    from rag_rerank.retrieval.encoder import is_e5_name
    from rag_rerank.retrieval.known_queries import DATA_FILE, KnownQueries

    def copy(name):
        return shutil.copytree(tiny_ce, tmp_path / name)

    wrong = copy("wrong-type")
    config = json.loads((wrong / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertForSequenceClassification"])
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json describes a 'bert' model, but the weights lack"):
        Reranker(str(wrong))
    small = copy("small-vocab")
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "vocab_size": 10}))
    with pytest.raises(ValueError, match="the tokenizer has .* tokens but the model's embeddings 10"):
        Reranker(str(small))
    for name, cut in (("truncated", lambda b: b[: len(b) // 2]), ("empty", lambda b: b"")):
        broken = copy(name)
        weights = broken / "model.safetensors"
        weights.write_bytes(cut(weights.read_bytes()))
        with pytest.raises(ValueError, match=f"{name}: the weights could not be loaded"):
            Reranker(str(broken))
    known = copy("known")
    (known / "rag_rerank.json").write_text('{"known_queries": {"weight": 0.3, "rrf_k": 60}}')
    (known / DATA_FILE).write_bytes(gzip.compress(b'{"query": "q", "positives": ["d"]}\n{"query": "q2", "posi'))
    with pytest.raises(ValueError, match=r"known_queries.jsonl.gz:2: the model's known queries are damaged"):
        KnownQueries.load(known)
    assert is_e5_name("intfloat/multilingual-e5-small") and is_e5_name("/models/my-e5-tuned")
    assert not is_e5_name("/cache/models--x--bge5-ko/snapshots/3e5a1") and not is_e5_name("tree5")


def test_e5_prompts_without_saved_ones_under_sentence_transformers_defaults(tiny_encoder, tmp_path, monkeypatch):
    """sentence-transformers 6 fills empty default prompts: an e5 folder still gets both e5 prompts."""
    import shutil

    from rag_rerank.retrieval.encoder import BiEncoder

    folder = shutil.copytree(tiny_encoder, tmp_path / "tiny-e5")
    from sentence_transformers import SentenceTransformer

    real = SentenceTransformer.__init__

    def with_defaults(self, *a, **kw):
        real(self, *a, **kw)
        self.prompts = {"query": "", "document": ""}

    monkeypatch.setattr(SentenceTransformer, "__init__", with_defaults)
    enc = BiEncoder(str(folder))
    assert (enc.query_prompt, enc.passage_prompt) == ("query: ", "passage: ")


def test_latin_words_match_whole(store):
    """Kiwi splits a Latin word that ends a sentence ('PayPal.' -> 'P' + 'ayPal.'): BM25 takes them whole."""
    hits = store.search_lexical("PayPal 결제", 3)
    assert hits and hits[0].text == "배송 문의는 PayPal."


def test_huge_document_is_tokenised_in_pieces():
    import time

    from rag_rerank.retrieval.lexical import KiwiTokenizer

    text = "대한민국의 수도는 서울이다. " * 30000 + "마지막단어"  # ~0.5 MB in one string
    start = time.perf_counter()
    tokens = KiwiTokenizer()([text])[0]
    assert time.perf_counter() - start < 120 and tokens.count("서울") == 30000 and "마지막" in "".join(tokens)


def test_collection_names_cannot_leave_the_store(tmp_path):
    for name in ("../../etc/passwd", "a/../../b", "..", "한국어 컬렉션"):
        path = lexical_dir(tmp_path, name)
        assert path.parent == tmp_path / "bm25" and ".." not in path.name and "/" not in path.name


def test_damaged_bm25_is_rebuilt_from_the_collection(store):
    path = store.lexical.directory / "manifest.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="rebuilding the BM25 index from the collection"):
        again = ChromaStore(store.path, "faults", encoder=store.encoder)
    assert again.lexical.ids == store.all_ids() and again.search_lexical("부산", 2)[0].text == "부산은 항구 도시이다."
    assert LexicalIndex(path.parent, "kiwi").ids == store.all_ids()  # and saved whole
    assert list(path.parent.parent.glob("*.damaged-*"))  # the damaged folder is kept aside, not deleted


def test_cli_exit_codes(tmp_path, tiny_ce):
    rc, _, err = run_cli(["search", "q", "--store", str(tmp_path / "none"), "--mode", "bm25"])
    assert rc == 1 and "no store there" in err  # a runtime error
    rc, _, err = run_cli(["search", "q", "--mode", "bm25"])
    assert rc == 2 and "give the corpus" in err  # flags that do not make a command
    rc, _, err = run_cli(["search", "q", "--store", str(tmp_path), "-k", "0"])
    assert rc == 2 and "must be >= 1" in err  # argparse's usage error
    rc, _, err = run_cli(["train", "--data", str(tmp_path / "d.jsonl"), "--set", "lr"])
    assert rc == 2 and "give KEY=VALUE" in err
    rc, _, err = run_cli(["serve", "--max-wait-ms", "inf"])
    assert rc == 2 and "--max-wait-ms must be in [0, 10000]" in err
    rc, _, err = run_cli(["serve", "--max-body-mb", "-1"])
    assert rc == 2 and "--max-body-mb must be in (0, 4096]" in err
    from rag_rerank.cli import _where_arg, UsageError

    with pytest.raises(UsageError, match="--where '{source: faq}' is not JSON"):
        _where_arg("{source: faq}")
    with pytest.raises(UsageError, match="--where must be a JSON object"):
        _where_arg('["faq"]')


INGEST = textwrap.dedent("""
    import os, signal, sys
    from rag_rerank import lexical_index
    from rag_rerank.retrieval.store import ChromaStore
    store_dir, encoder, crash = sys.argv[1], sys.argv[2], sys.argv[3]
    store = ChromaStore(store_dir, "crash", encoder=encoder)
    store._max_batch = 7  # several write batches
    docs = [f"{i}번 문서: 서울과 부산의 날씨 {i % 5}" for i in range(40)]
    calls = []
    if crash == "mid-batch":  # killed after the third batch reached Chroma, before the fourth
        real = store.collection.add
        def add(**kw):
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(**kw)
        store.collection.add = add
    if crash == "after-chroma":  # the fourth batch is in Chroma, killed before its BM25 commit
        real_commit = lexical_index.LexicalIndex.commit
        def commit(self, batch, *a, **kw):
            if batch is not None and len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            if batch is not None:
                calls.append(1)
            return real_commit(self, batch, *a, **kw)
        lexical_index.LexicalIndex.commit = commit
    if crash == "bm25-write":  # killed while a BM25 segment's files are being written
        real_write = lexical_index.Segment.write
        def write(path, arrays):
            calls.append(1)
            if len(calls) == 3:
                path.mkdir(parents=True)
                (path / "terms.npy").write_bytes(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(path, arrays)
        lexical_index.Segment.write = staticmethod(write)
    store.add(docs)
    print(store.count())
""")


def test_killed_ingest_recovers_exactly_on_rerun(tmp_path, tiny_encoder):
    """SIGKILL mid write batch, between a batch's Chroma write and its BM25 commit, and while a BM25
    segment is written (three stores, the ingests side by side): opening the store again finds BM25 in
    step with Chroma, and re-running the ingest leaves every document once in both."""
    script = tmp_path / "ingest.py"
    script.write_text(INGEST, encoding="utf-8")
    crashes = ("mid-batch", "after-chroma", "bm25-write")
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / crash), str(tiny_encoder), crash],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TQDM_DISABLE": "1"}) for crash in crashes]  # one store each
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
    for crash in crashes:
        store = ChromaStore(tmp_path / crash, "crash", encoder=str(tiny_encoder))  # opened after the kill
        stored = store.all_ids()
        assert 0 < len(stored) < 40 and store.lexical.ids == stored, crash  # in step before any re-run
        store.add([f"{i}번 문서: 서울과 부산의 날씨 {i % 5}" for i in range(40)])  # the re-run, in this process
        ids = store.all_ids()
        assert store.count() == 40 == len(ids), crash  # every document once: no loss, no duplicate
        assert store.lexical.ids == ids and LexicalIndex(store.lexical.directory, "kiwi").ids == ids, crash
        assert len(store.search_lexical("39번 문서", 40)) == 40 and not list(store.lexical.directory.glob("tmp-*"))


def test_two_writers_keep_every_bm25_entry(store):
    """A second writer opened before the first wrote (a stale BM25 in memory) must not overwrite the
    first writer's entries when it saves: writes take the store's lock and catch up first."""
    other = ChromaStore(store.path, "faults", encoder=store.encoder)
    store.add(["광주는 빛고을이다."])
    other.add(["대전은 과학 도시이다."])
    ids = store.all_ids()
    assert len(ids) == 5 and LexicalIndex(store.lexical.directory, "kiwi").ids == ids
    assert other.search_lexical("광주", 2)[0].text == "광주는 빛고을이다."


def test_training_files_with_a_byte_order_mark_load(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark: it had become part of the first column's name,
    so a file with a ``query`` column was refused for having none (and a JSONL file's first row was not JSON)."""
    bom = "\ufeff".encode("utf-8")
    for name, body in (("b.csv", "query,positive\n제주도,제주도는 섬이다.\n"),
                       ("b.tsv", "query\tpositive\n제주도\t제주도는 섬이다.\n"),
                       ("b.jsonl", json.dumps({"query": "제주도", "positive": "제주도는 섬이다."}, ensure_ascii=False))):
        data = train_data.load(_file(tmp_path, name, bom + body.encode("utf-8"), raw=True))
        assert [(g.query, g.positives) for g in data.groups] == [("제주도", ["제주도는 섬이다."])], name


def test_config_files_with_a_byte_order_mark_load(tmp_path, tiny_ce):
    """A training config or a model's rag_rerank.json saved by an editor that writes a byte-order mark."""
    import shutil

    from rag_rerank.models import settings as model_settings
    from rag_rerank.train import load_config

    cfg = _file(tmp_path, "c.json", "\ufeff".encode("utf-8") + b'{"preset": "fast", "learning_rate": 3e-5}', raw=True)
    assert load_config(cfg).learning_rate == 3e-5
    model = tmp_path / "m"
    shutil.copytree(tiny_ce, model)
    (model / "rag_rerank.json").write_bytes("\ufeff".encode("utf-8") + b'{"candidate_k": 30}')
    assert model_settings.load(str(model)).candidate_k == 30
