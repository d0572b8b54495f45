"""The CPU backends (ONNX Runtime, OpenVINO) score and embed like the torch reference (issue 15)."""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil

import numpy as np
import pytest
import torch

from rag_rerank import Reranker, onnx_backend
from rag_rerank.retrieval.encoder import BiEncoder
from rag_rerank.evaluate import mrr
from rag_rerank.testing import tiny_albert_cross_encoder


@pytest.fixture()
def ce_copy(tiny_ce, tmp_path):
    """A private copy: the export is cached inside the model directory."""
    return shutil.copytree(tiny_ce, tmp_path / "ce")


def test_onnx_reranker_equals_torch_in_fp32_and_caches_its_export(ce_copy, korean_sentences):
    query, docs = korean_sentences[0], korean_sentences[1:30] + [" ".join(korean_sentences[30:120])]
    reference = np.array(Reranker(str(ce_copy), max_length=96).score(query, docs, raw=True))
    onnx = Reranker(str(ce_copy), max_length=96, backend="onnx")  # fp32 by default
    assert "backend='onnx'" in repr(onnx) and onnx.model is None
    np.testing.assert_allclose(onnx.score(query, docs, raw=True), reference, atol=1e-5)  # long doc windowed alike
    graph = ce_copy / "onnx" / "classifier.onnx"
    made = graph.stat().st_mtime_ns
    Reranker(str(ce_copy), max_length=96, backend="onnx", quantize=False)
    assert graph.stat().st_mtime_ns == made  # reused, not exported again
    weights = next(ce_copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # new weights (same bytes, new stamp): export again
    Reranker(str(ce_copy), max_length=96, backend="onnx", quantize=False)
    assert graph.stat().st_mtime_ns != made
    made = graph.stat().st_mtime_ns
    stamp = graph.with_suffix(".json")
    stamp.write_text(stamp.read_text().replace(onnx_backend.EXPORT_VERSION, "an older export"))
    Reranker(str(ce_copy), max_length=96, backend="onnx", quantize=False)
    assert graph.stat().st_mtime_ns != made  # made by another version of the exporter: export again


def test_onnx_export_of_a_read_only_model_goes_to_the_cache(ce_copy, model_home, korean_sentences, monkeypatch):
    from rag_rerank.models import default_cache_dir

    # A read-only model directory (a shared or packaged model); chmod cannot show it to root.
    real_access = onnx_backend.os.access
    monkeypatch.setattr(onnx_backend.os, "access", lambda path, mode: False if path == ce_copy else
                        real_access(path, mode))
    onnx = Reranker(str(ce_copy), max_length=96, backend="onnx", quantize=False)
    assert not (ce_copy / "onnx").exists()
    assert list((default_cache_dir() / "onnx").glob(f"{ce_copy.name}-*/classifier.onnx"))  # under model_home
    assert len(onnx.score(korean_sentences[0], korean_sentences[1:4])) == 3


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_cpu_backends_are_cpu_only_and_named(backend):
    with pytest.raises(ValueError, match="runs on the CPU"):
        Reranker("unused", backend=backend, device="cuda")
    with pytest.raises(ValueError, match="backend must be"):
        Reranker("unused", backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        BiEncoder("unused", backend=backend, device="cuda")
    with pytest.raises(ValueError, match="compile applies to backend='torch'"):
        Reranker("unused", backend=backend, compile=True)


def test_precision_options_that_a_backend_cannot_honour_are_refused(ce_copy, tiny_encoder):
    with pytest.raises(ValueError, match="quantize=True is ONNX Runtime's int8"):
        Reranker(str(ce_copy), backend="openvino", quantize=True)
    with pytest.raises(ValueError, match="quantize=True is ONNX Runtime's int8"):
        Reranker(str(ce_copy), quantize=True)  # torch: never silently fp32
    with pytest.raises(ValueError, match="quantize=True is ONNX Runtime's int8"):
        BiEncoder(str(tiny_encoder), backend="openvino", quantize=True)
    with pytest.raises(ValueError, match="backend='onnx' computes in fp32"):
        Reranker(str(ce_copy), backend="onnx", dtype="bf16")  # was silently fp32
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        Reranker(str(ce_copy), backend="openvino", dtype="int4")
    with pytest.raises(ValueError, match="threads sets the CPU backends' threads"):
        Reranker(str(ce_copy), threads=2)  # torch: was silently ignored
    with pytest.raises(ValueError, match="threads sets the CPU backends' threads"):
        BiEncoder(str(tiny_encoder), threads=2)
    from rag_rerank.retrieval.first_stage import InMemoryCorpus

    with pytest.raises(ValueError, match="encoder_options apply to an encoder given by name"):  # not dropped
        InMemoryCorpus(["가", "나"], mode="dense", encoder=BiEncoder(str(tiny_encoder)), encoder_options={"backend": "onnx"})
    assert not (ce_copy / "onnx").exists()  # refused before any export


def test_a_model_over_two_gigabytes_exports_with_its_weights_in_one_file_beside_the_graph(
        ce_copy, korean_sentences, monkeypatch):
    """Models over protobuf's 2 GB (XLM-R-large rerankers: bge-reranker-v2-m3) export with every tensor in a
    file of its own beside the graph; the cache keeps them as one data file that moves with the graph (they
    were left in the temp folder, so OpenVINO found no weights: 'invalid external data')."""
    import onnx

    export = onnx_backend._export

    def as_if_large(model_dir, task, out):  # what torch.onnx.export writes for a model over 2 GB
        export(model_dir, task, out)
        onnx.save_model(onnx.load(str(out)), str(out), save_as_external_data=True, all_tensors_to_one_file=False,
                        size_threshold=0)

    monkeypatch.setattr(onnx_backend, "_export", as_if_large)
    query, docs = korean_sentences[0], korean_sentences[1:12]
    reference = np.array(Reranker(str(ce_copy), max_length=96).score(query, docs, raw=True))
    for backend in ("openvino", "onnx"):
        got = Reranker(str(ce_copy), max_length=96, backend=backend, dtype="fp32").score(query, docs, raw=True)
        np.testing.assert_allclose(got, reference, atol=1e-4)
    assert (ce_copy / "onnx" / "classifier.plain.onnx.data").stat().st_size > 0
    # ONNX Runtime's fused graph is saved whole (the optimizer read the weights in; over 2 GB its save fails
    # and the plain graph, one data file beside it, is used); no temp folders, no per-tensor files are left
    assert sorted(p.name for p in (ce_copy / "onnx").iterdir()) == [
        "classifier.json", "classifier.onnx", "classifier.plain.json", "classifier.plain.onnx",
        "classifier.plain.onnx.data"]


def test_openvino_reranker_scores_like_torch_and_reuses_the_plain_export(ce_copy, korean_sentences):
    import onnx
    import torch

    query, docs = korean_sentences[0], korean_sentences[1:30] + [" ".join(korean_sentences[30:120])]
    reference = np.array(Reranker(str(ce_copy), max_length=96).score(query, docs, raw=True))
    fp32 = Reranker(str(ce_copy), max_length=96, backend="openvino", dtype="fp32", threads=1)
    assert fp32.dtype == torch.float32 and "backend='openvino', dtype=torch.float32" in repr(fp32)
    assert fp32.engine.graph.compiled.get_property("INFERENCE_NUM_THREADS") == 1  # threads reach OpenVINO
    assert {k: fp32.engine.describe()[k] for k in ("engine", "runtime", "dtype")} == {
        "engine": "exported", "runtime": "openvino", "dtype": "float32"}
    np.testing.assert_allclose(fp32.score(query, docs, raw=True), reference, atol=1e-4)  # long doc windowed alike
    # OpenVINO reads the plain graph (ONNX Runtime's fused operators are not standard ONNX)
    graph = ce_copy / "onnx" / "classifier.plain.onnx"
    ops = {n.op_type for n in onnx.load(str(graph)).graph.node}
    assert "MatMul" in ops and not ops & {"Attention", "SkipLayerNormalization", "FastGelu"}
    assert not (ce_copy / "onnx" / "classifier.onnx").exists()  # nor was a fused graph made for it
    made = graph.stat().st_mtime_ns
    auto = Reranker(str(ce_copy), max_length=96, backend="openvino")  # this CPU's precision: bf16 or fp32
    assert graph.stat().st_mtime_ns == made  # reused, not exported again
    assert auto.dtype in (torch.float32, torch.bfloat16)
    # the precision check on a model whose scores spread: the tiny model's logits differ by ~1e-4, below
    # bf16's rounding, so its ranking under bf16 is noise (correlation 0.81 on an AMX CPU)
    spread = tiny_albert_cross_encoder(ce_copy.parent / "spread", korean_sentences, initializer_range=0.1)
    reference = np.array(Reranker(str(spread), max_length=96).score(query, docs, raw=True))
    assert reference.std() > 0.01
    got = np.array(Reranker(str(spread), max_length=96, backend="openvino").score(query, docs, raw=True))
    assert np.corrcoef(got, reference)[0, 1] > 0.99
    assert np.abs(got - reference).max() < 0.1 * np.ptp(reference) + 1e-3


def test_openvino_reranker_is_safe_to_share_across_threads(ce_copy, korean_sentences):
    from concurrent.futures import ThreadPoolExecutor

    reranker = Reranker(str(ce_copy), max_length=64, backend="openvino", dtype="fp32")
    jobs = [(korean_sentences[i], korean_sentences[i + 1 : i + 9]) for i in range(0, 80, 10)]
    alone = [reranker.score(q, d, raw=True) for q, d in jobs]
    with ThreadPoolExecutor(4) as pool:  # one infer request per thread: no run sees another's buffers
        together = list(pool.map(lambda job: reranker.score(*job, raw=True), jobs * 3))
    for i, scores in enumerate(together):
        np.testing.assert_allclose(scores, alone[i % len(jobs)], atol=1e-6)


def test_openvino_models_released_oldest_first_leave_signals_deliverable(ce_copy, tiny_encoder):
    """Each OpenVINO Core's CPU plugin swaps the loading thread's signal stack for its own and puts back the one
    it found when released: two models released oldest first left the thread on an unmapped stack, and the next
    signal handled there killed the process with SIGSEGV before any handler ran (the suite's xdist worker died
    so, at a subprocess start after in-process training had set a SIGCHLD handler). A subprocess, as the
    failure kills the process that has it."""
    import subprocess
    import sys

    code = f"""
import ctypes, gc, os, signal
from rag_rerank import Reranker
from rag_rerank.retrieval.encoder import BiEncoder
first = Reranker({str(ce_copy)!r}, device="cpu", backend="openvino")
first.score("서울", ["서울은 수도이다."])
second = BiEncoder({str(tiny_encoder)!r}, backend="openvino")
second.embed_passages(["서울은 수도이다."])
del first; gc.collect()
del second; gc.collect()

class Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]
stack = Stack()
ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
spans = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in open("/proc/self/maps")]
if stack.sp and not any(a <= stack.sp and stack.sp + stack.size <= b for a, b in spans):
    print("signal stack unmapped")
seen = []
signal.signal(signal.SIGUSR1, lambda *a: seen.append(1))  # Python's handlers run on the signal stack
os.kill(os.getpid(), signal.SIGUSR1)
print("handled" if seen else "not handled")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["handled"], (out.returncode, out.stdout, out.stderr[-2000:])


def test_openvino_bi_encoder_equals_sentence_transformers(tiny_encoder, tmp_path, korean_sentences):
    enc_dir = shutil.copytree(tiny_encoder, tmp_path / "enc")
    docs = korean_sentences[:40] + [" ".join(korean_sentences[40:200])]  # one past max_length: truncated alike
    reference = BiEncoder(str(enc_dir))
    fp32 = BiEncoder(str(enc_dir), backend="openvino", dtype="fp32")
    assert fp32.dimension == reference.dimension and "backend='openvino'" in repr(fp32)
    np.testing.assert_allclose(fp32.embed_passages(docs), reference.embed_passages(docs), atol=1e-5)
    np.testing.assert_allclose(fp32.embed_query(docs[3]), reference.embed_query(docs[3]), atol=1e-5)
    assert fp32.dtype == torch.float32 == reference.dtype  # what each computes in, as Reranker.dtype says
    auto_encoder = BiEncoder(str(enc_dir), backend="openvino")
    assert auto_encoder.dtype in (torch.bfloat16, torch.float32)  # OpenVINO's choice for this CPU
    auto = auto_encoder.embed_passages(docs)
    assert np.allclose(np.linalg.norm(auto, axis=1), 1, atol=1e-5)
    assert (auto * reference.embed_passages(docs)).sum(axis=1).min() > 0.99  # cosine to the reference


def test_onnx_bi_encoder_equals_sentence_transformers(tiny_encoder, tmp_path, korean_sentences):
    enc_dir = shutil.copytree(tiny_encoder, tmp_path / "enc")
    docs = korean_sentences[:40] + [" ".join(korean_sentences[40:200])]  # one past max_length: truncated alike
    reference = BiEncoder(str(enc_dir))
    fp32 = BiEncoder(str(enc_dir), backend="onnx", quantize=False)
    assert fp32.dimension == reference.dimension
    np.testing.assert_allclose(fp32.embed_passages(docs), reference.embed_passages(docs), atol=1e-5)
    np.testing.assert_allclose(fp32.embed_query(docs[3]), reference.embed_query(docs[3]), atol=1e-5)
    int8 = BiEncoder(str(enc_dir), backend="onnx", quantize=True).embed_passages(docs)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1, atol=1e-5)
    assert (int8 * reference.embed_passages(docs)).sum(axis=1).min() > 0.99  # cosine to the reference


def _kornli_ranking_task(kornli):
    """20 KorNLI test hypotheses, each with its premise and six other premises as candidates."""
    pairs, premises = kornli["test"]
    queries = [h for h, _p in pairs[:20]]
    relevant = [{p} for _h, p in pairs[:20]]
    pool = sorted(set(premises) - {p for _h, p in pairs[:20]})[:6]
    candidates = [[p, *pool] for _h, p in pairs[:20]]  # the right premise and six others
    return queries, relevant, candidates


@pytest.fixture(scope="module")
def shipped_reranker_cut(e5_cross_encoder, kornli, tmp_path_factory):
    """The shipped reranker on e5 cut to the pieces of the ranking task's texts (models.subset): on those
    texts it computes what the full model computes (cut_e5 checks every text tokenises alike), and its
    ONNX / OpenVINO exports take a quarter of the time (the 250k-piece embedding table is most of e5)."""
    from rag_rerank.models import SHIPPED_DIR, SHIPPED_RERANKER
    from rag_rerank.models.delta import apply_delta
    from rag_rerank.models import subset

    queries, _relevant, candidates = _kornli_ranking_task(kornli)
    d = tmp_path_factory.mktemp("cut")
    # through the command a user runs: the texts from a plain file and a .jsonl.gz of lists
    (d / "queries.txt").write_text("\n".join(queries) + "\n", encoding="utf-8")
    with gzip.open(d / "candidates.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"query": q, "documents": cs}, ensure_ascii=False) + "\n"
                      for q, cs in zip(queries, candidates))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert subset.main([str(d / "e5cut.bin"), str(d / "queries.txt"), str(d / "candidates.jsonl.gz"),
                            "--work", str(d)]) == 0
    info = json.loads(out.getvalue())
    assert info["texts"] == len({"query: ", "passage: ", *queries, *(c for cs in candidates for c in cs)})
    assert info["pieces_kept"] < info["pieces_full"] // 20 and info["texts_tokenised_differently"] == 0
    return apply_delta(SHIPPED_DIR / SHIPPED_RERANKER, info["dir"], d / "shipped")


def test_subset_texts_name_the_file_and_line_of_a_bad_row(tmp_path):
    from rag_rerank.models.subset import read_texts

    (tmp_path / "a.jsonl").write_text('{"q": "하나", "d": ["둘", {"x": "셋"}], "n": 3}\n\n{"q": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.jsonl, line 3: not JSON"):
        read_texts([tmp_path / "a.jsonl"])
    (tmp_path / "a.jsonl").write_text('{"q": "하나", "d": ["둘", {"x": "셋"}], "n": 3}\n', encoding="utf-8")
    (tmp_path / "b.txt").write_text("넷\n\n하나\n", encoding="utf-8")
    assert read_texts([tmp_path / "a.jsonl", tmp_path / "b.txt"]) == sorted(["하나", "둘", "셋", "넷"])


def test_the_cut_reranker_scores_its_texts_like_the_full_one(shipped_reranker_cut, e5_reranker, kornli):
    queries, _relevant, candidates = _kornli_ranking_task(kornli)
    cut = Reranker(str(shipped_reranker_cut))
    assert len(cut.tokenizer) < len(e5_reranker.tokenizer) // 20
    np.testing.assert_allclose(cut.score(queries[0], candidates[0], raw=True),
                               e5_reranker.score(queries[0], candidates[0], raw=True), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(backend="onnx", quantize=True), dict(backend="openvino")],
                         ids=["onnx-int8", "openvino-auto"])
def test_reduced_precision_reranker_ranks_korean_like_the_reference(e5_cross_encoder, shipped_reranker_cut,
                                                                     kornli, options):
    """The shipped e5 reranker with int8 weights (ONNX Runtime) or in OpenVINO's precision for this
    CPU (bf16 where it has bf16 units): the same rankings as the fp32 torch reference to within a small
    MRR drift on KorNLI test queries. The exported model is the vocabulary-cut twin (same scores on
    these texts, a quarter of the export time); the reference is the full shipped model."""
    queries, relevant, candidates = _kornli_ranking_task(kornli)
    reference = Reranker(str(e5_cross_encoder), max_length=128)
    int8 = Reranker(str(shipped_reranker_cut), max_length=128, **options)

    def ranked(reranker):
        return [[docs[r.index] for r in ranking] for docs, ranking in
                zip(candidates, reranker.rerank_many(queries, candidates))]

    expected, got = mrr(ranked(reference), relevant), mrr(ranked(int8), relevant)
    assert expected > 0.5  # a model that ranks, or the comparison says nothing
    assert abs(got - expected) <= 0.05
    scores_ref = np.array(reference.score(queries[0], candidates[0]))
    scores_int8 = np.array(int8.score(queries[0], candidates[0]))
    assert np.corrcoef(scores_ref, scores_int8)[0, 1] > 0.95
    if options["backend"] != "onnx":
        return
    import onnx

    graph = onnx.load(str(onnx_backend.exported(shipped_reranker_cut, "classifier", quantize=True)))  # cached
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Attention") + ops.count("QAttention") == 12 and "SkipLayerNormalization" in ops  # fused


def test_auto_backend_is_the_default_and_takes_the_fastest_installed(ce_copy, tiny_encoder, korean_sentences,
                                                                     monkeypatch, caplog):
    """backend="auto" (the default a CPU-only user gets): OpenVINO where installed, else ONNX Runtime, else
    torch; quantize asks for ONNX Runtime; a GPU, compile or remote code keep torch; RAG_RERANK_BACKEND
    overrides (the suite itself pins torch with it); the choice and its reason are on the object and logged."""
    import importlib.util
    import logging

    from rag_rerank.models.export import choose_backend

    monkeypatch.delenv("RAG_RERANK_BACKEND")
    query, docs = korean_sentences[0], korean_sentences[1:20]
    with caplog.at_level(logging.INFO, logger="rag_rerank"):
        auto = Reranker(str(ce_copy), max_length=96)
    assert auto.backend == "openvino" and auto.model is None and "OpenVINO installed" in auto.backend_reason
    assert any("backend=openvino" in r.getMessage() for r in caplog.records)
    # what backend="openvino" computes (its numerics against torch: the tests above, and the e5 ranking test)
    asked = Reranker(str(ce_copy), max_length=96, backend="openvino")
    assert auto.dtype == asked.dtype and auto.score(query, docs, raw=True) == asked.score(query, docs, raw=True)
    assert BiEncoder(str(tiny_encoder)).backend == "openvino"
    assert choose_backend("auto", None, quantize=True)[0] == "onnx"
    assert choose_backend("auto", None, compile=True)[0] == "torch"
    assert choose_backend("auto", None, trust_remote_code=True)[0] == "torch"
    assert choose_backend("onnx", None) == ("onnx", "asked for")  # an explicit backend is never re-chosen
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real_find(name, *a))
    assert choose_backend("auto", "cpu")[0] == "onnx"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("openvino", "onnxruntime")
                        else real_find(name, *a))
    assert choose_backend("auto", "cpu")[0] == "torch"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_backend("auto", None) == ("torch", "a cuda device")
    monkeypatch.undo()
    monkeypatch.setenv("RAG_RERANK_BACKEND", "onnx")
    assert Reranker(str(ce_copy), max_length=96).backend == "onnx"
    monkeypatch.setenv("RAG_RERANK_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="RAG_RERANK_BACKEND='tensorrt'"):
        Reranker(str(ce_copy))


def test_auto_backend_falls_back_to_torch_where_the_export_fails(ce_copy, tiny_encoder, monkeypatch, caplog):
    """A model the CPU backends cannot take still loads under "auto" (torch, with a warning saying why);
    asked for by name, the backend's failure is the caller's error."""
    monkeypatch.delenv("RAG_RERANK_BACKEND")

    def broken(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(onnx_backend, "load", broken)
    with caplog.at_level("WARNING", logger="rag_rerank"):
        r = Reranker(str(ce_copy), max_length=96)
        e = BiEncoder(str(tiny_encoder))
    assert (r.backend, r.backend_reason, r.model is not None) == ("torch", "the openvino load failed", True)
    assert e.backend == "torch" and e.backend_reason == "the openvino load failed"
    assert sum("could not run" in m.getMessage() and "using torch" in m.getMessage() for m in caplog.records) == 2
    assert len(r.score("질문", ["문서 하나", "문서 둘"])) == 2
    with pytest.raises(RuntimeError, match="does not know"):
        Reranker(str(ce_copy), backend="openvino")
