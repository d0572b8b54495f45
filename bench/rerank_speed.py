"""Inference speed (issue 15): our Reranker and BiEncoder against sentence-transformers, one run.

RAG-shaped work from the KorQuAD part of the shared data: questions, and for each the top
passages of Kiwi BM25 over all paragraphs (200-500 tokens each), the right one among them.

Reranking: sentence-transformers ``CrossEncoder.predict`` (fp32, batch 32, the baseline) vs
``Reranker`` with each backend; pairs/s end to end (tokenisation included), latency of one
question x ``--latency-docs`` passages (p50/p95), MRR@10 of each ranking and its drift from the
baseline, and the correlation of each system's scores with the baseline's (1.0: the same scores).
The 1 x N latency is timed on the first question's call again and again (comparable run to run), and
on the first 50 questions' calls once each (each its own passages). Our rows are timed cold, the
reranker's token cache emptied before each timed call, except the latency column "passages seen
before" (the same call again: every passage's ids known) and "one question a call" (the questions in
turn, the cache filling as they come, as a service's would).
Embedding: ``SentenceTransformer.encode`` vs ``BiEncoder``; passages/s, and dense MRR@10
over the whole corpus for the questions (drift from the baseline).

    python bench/rerank_speed.py --out bench/results/speed_cpu        # CPU (what CI machines are)
    python bench/rerank_speed.py --device cuda ...                    # GPU rows (torch backend)

Model: ``--model`` (default: the shipped reranker, ko-reranker-e5-small, rebuilt once from its delta)
and ``--encoder`` (default: the offline e5 twin).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAG_RERANK_DATA", ROOT.parent / "shared" / "data"))


def saved(candidates_file: str, corpus_file: str, n_queries: int, depth: int):
    """The same from files a machine without Kiwi can read: a first stage's saved candidates
    (rag-rerank eval --save-candidates, e.g. bench/quality.py's test.bm25-kiwi.jsonl.gz) and its corpus."""
    from rag_rerank.retrieval.store import iter_documents
    from rag_rerank.train import data

    groups = [g for g in data.load(candidates_file).groups if g.candidates][:n_queries]
    corpus = [d.text for d in iter_documents(corpus_file)]
    return [g.query for g in groups], [set(g.positives) for g in groups], [g.candidates[:depth] for g in groups], corpus


def korquad(n_queries: int, depth: int):
    """(questions, their relevant paragraph, BM25 top-``depth`` paragraphs per question, corpus)."""
    from rag_rerank.retrieval.first_stage import InMemoryCorpus

    sys.path.insert(0, str(ROOT / "bench"))
    from quality import _korquad

    _train, _validation, test, corpus = _korquad()
    questions = list(test)[:n_queries]
    relevant = [set(test[q]) for q in questions]
    bm25 = InMemoryCorpus(corpus, mode="bm25")
    candidates = [[h.text for h in bm25.candidates(q, depth)] for q in questions]
    return questions, relevant, candidates, corpus


def mrr(rankings, relevant) -> float:
    from rag_rerank.evaluate import mrr as _mrr

    return _mrr(rankings, relevant)


def timed(fn, repeat: int = 1):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, times


def rerank_rows(args, model_path, questions, relevant, candidates, rows: list[dict] | None = None,
                on_row=lambda: None) -> list[dict]:
    """Every system's row, appended to ``rows`` as it ends, ``on_row()`` after each (the run saves itself
    there: one cut by a time limit keeps what it measured)."""
    import torch

    work = _Work(questions, relevant, candidates, args.latency_docs)
    # (label, None for ST or a Reranker spec, ST dtype / Reranker kwargs)
    systems = [("sentence-transformers CrossEncoder.predict (fp32, batch 32)", None, torch.float32)]
    if args.device == "cpu":
        for backend, quantize, dtype in args.backends:
            systems.append((_label("Reranker", backend, quantize, dtype), "reranker",
                            dict(backend=backend, quantize=quantize, dtype=dtype, batch_size=32)))
    elif args.large:  # a 568M model: the baseline, ST at its best, our default, twice the baseline
        systems += [("sentence-transformers CrossEncoder.predict (fp16, batch 128)", None, torch.float16),
                    ("Reranker defaults (fp16, packed passes of 64 x 512 tokens, CUDA graphs)", "reranker", {}),
                    ("sentence-transformers CrossEncoder.predict (fp32, batch 32), again last", None, torch.float32)]
    else:  # ST at its best on a GPU too, so the ratio is not fp16-vs-fp32 alone
        systems += [("sentence-transformers CrossEncoder.predict (fp16, batch 128)", None, torch.float16),
                    ("Reranker defaults (fp16, packed passes of 64 x 512 tokens, CUDA graphs)", "reranker", {}),
                    ("Reranker fused_ffn=False (the model's own GELU kernel after each feed-forward GEMM)", "reranker",
                     dict(fused_ffn=False)),
                    ("Reranker fused_norm=False (torch's residual add and LayerNorm kernels)", "reranker",
                     dict(fused_norm=False)),
                    ("Reranker cuda_graphs=False (packed passes launched op by op)", "reranker",
                     dict(cuda_graphs=False)),
                    ("Reranker pack=False (fp16, padded passes of 64 x 512 tokens)", "reranker", dict(pack=False)),
                    *[(f"Reranker batch_size={b} (fp16, packed passes of {b} x 512 tokens, CUDA graphs)", "reranker",
                       dict(batch_size=b)) for b in args.batch_sizes],
                    ("Reranker fp32, batch 32", "reranker", dict(dtype="fp32", batch_size=32))]
        if args.compile:
            systems += [("Reranker(compile=True) (fp16, packed passes of 64 x 512 tokens, CUDA graphs)", "reranker",
                         dict(compile=True)),
                        ("Reranker(compile=True, cuda_graphs=False)", "reranker", dict(compile=True, cuda_graphs=False)),
                        ("Reranker(compile=True, batch_size=128) (CUDA graphs)", "reranker",
                         dict(compile=True, batch_size=128))]
        # the baseline again, last: device hosts differ (ST fp32 ran 952-1,440 pairs/s on six H200s), and a
        # ratio against one ST run carries that run's luck; "vs ST" is against the mean of both
        systems.append(("sentence-transformers CrossEncoder.predict (fp32, batch 32), again last", None, torch.float32))
    if args.only:  # the baseline (first) stays: every ratio is against it
        systems = systems[:1] + [s for s in systems[1:] if re.search(args.only, s[0])]
    rows, base = ([] if rows is None else rows), None
    for label, spec, options in systems:
        try:
            row, scores = _rerank_row(args, model_path, work, label, spec, options)
        except Exception as exc:  # one failing system (a compile probe) must not lose the others' rows
            print(f"[rerank] {label}: FAILED {exc!r}", flush=True)
            continue
        base = base or (row["MRR@10"], scores)  # the first row, sentence-transformers fp32, is the baseline
        row["drift"] = row["MRR@10"] - base[0]
        row["score_corr"] = _corr(base[1], scores)
        rows.append(row)
        on_row()
        print(f"[rerank] {row['system']}: {row['pairs_per_s']:.1f} pairs/s, MRR@10 {row['MRR@10']:.4f}", flush=True)
    return rows


class _Work:
    """The timed work: every (question, passage) pair, and one question x ``latency_docs`` passages."""

    def __init__(self, questions, relevant, candidates, latency_docs: int) -> None:
        self.questions, self.relevant, self.candidates = questions, relevant, candidates
        self.pairs = [(q, d) for q, docs in zip(questions, candidates) for d in docs]
        self.one_q, self.one_docs = questions[0], candidates[0][:latency_docs]
        # one call per question, each its own passages: the spread of lengths a service meets
        self.calls = [(q, docs[:latency_docs]) for q, docs in list(zip(questions, candidates))[:50]]

    def mrr(self, scores) -> float:
        out, i = [], 0
        for docs in self.candidates:
            s = scores[i : i + len(docs)]
            i += len(docs)
            out.append([d for _, d in sorted(zip(s, docs), key=lambda x: -x[0])])
        return mrr(out, self.relevant)


def latency_parts(model, work: _Work, repeat: int, cuda: bool) -> dict:
    """Where the 1 x N call's time goes (medians, ms): tokenising (no passage's ids known), padding,
    the passes and the copy back."""
    import torch

    chunk = [(0, 0, work.one_q, list(work.one_docs))]
    times = {"tokenise": [], "pad": [], "forward": []}
    for _ in range(repeat):
        model.token_cache.clear()
        t0 = time.perf_counter()
        windows = model._tokenize_chunk(chunk)
        t1 = time.perf_counter()
        for idx in model.engine.plan(model._pairs.lengths(windows)):
            model.engine.batch(model._pairs, windows, idx)
        t2 = time.perf_counter()
        model._forward(windows)  # builds the batches again, runs every pass, copies the logits back
        if cuda:
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(1000 * value)
    return {key: statistics.median(v) for key, v in times.items()}


def _p95(seconds: list[float]) -> float:
    return 1000 * sorted(seconds)[max(0, round(0.95 * len(seconds)) - 1)]


def _corr(a, b) -> float:
    import numpy as np

    return float(np.corrcoef(a, b)[0, 1])


def _rerank_row(args, model_path, work: _Work, label: str, spec, options) -> tuple[dict, list[float]]:
    import torch
    from sentence_transformers import CrossEncoder

    from rag_rerank import Reranker

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    compiled, backend = False, None
    if spec is None:
        batch = 32 if options == torch.float32 else 128
        model = CrossEncoder(str(model_path), device=args.device, max_length=args.max_length,
                             model_kwargs={"dtype": options})
        score_all = lambda: list(model.predict(work.pairs, batch_size=batch, show_progress_bar=False))  # noqa: E731
        score_call = lambda q, docs: model.predict([(q, d) for d in docs], batch_size=batch,  # noqa: E731
                                                   show_progress_bar=False)
    else:
        options = dict(options)
        backend = options.pop("backend", "torch")
        compiled = options.get("compile", False)
        model = Reranker(str(model_path), device=args.device if backend == "torch" else None,
                         max_length=args.max_length, backend=backend,
                         threads=args.threads if backend != "torch" else None, **options)
        label = label.format(dtype=_short(model.dtype))  # "auto" rows name the precision this CPU got
        score_all = lambda: [s for group in model.score_many(work.questions, work.candidates) for s in group]  # noqa: E731
        score_call = model.score
    score_one = lambda: score_call(work.one_q, work.one_docs)  # noqa: E731
    per_query = lambda: [score_call(q, docs) for q, docs in zip(work.questions, work.candidates)]  # noqa: E731
    ours = spec is not None  # a Reranker (any backend), not sentence-transformers
    # Timed cold unless a column says otherwise: the reranker's token cache emptied before each timed call,
    # so no passage's ids are known (repeat runs of the same pairs would otherwise find all of them).
    forget = model.token_cache.clear if ours else (lambda: None)

    def cold(fn):
        def run():
            forget()
            return fn()
        return run

    score_one()  # warm-up: first-call costs are reported as load, not as throughput
    if compiled or cuda:
        # compiling the large shapes, and on a GPU recording each pass shape's CUDA graph (a one-time cost per
        # shape and process: 2-3x the timed run's time on the first pass over new shapes), are load too; every
        # system, sentence-transformers included, scores all pairs once before the timed runs
        score_all()
    if cuda:
        torch.cuda.synchronize()
    load = time.perf_counter() - start
    scores, t = timed(cold(score_all), args.repeat)
    _, lat = timed(cold(score_one), args.latency_repeat)
    each = []
    for q, docs in work.calls:
        each += timed(cold(lambda: score_call(q, docs)))[1]  # noqa: B023 - called at once
    warm = None
    if ours:  # the same call again and again: every passage's ids known from the call before
        score_one()
        _, warm = timed(score_one, args.latency_repeat)
    forget()
    _, tq = timed(per_query)  # the questions one after another, the cache filling as they come
    tokenize, parts = None, None
    if ours and backend == "torch":  # our tokenisation alone: the CPU side's bound
        chunk = [(g, 0, q, list(d)) for g, (q, d) in enumerate(zip(work.questions, work.candidates))]
        _, tt = timed(cold(lambda: model._tokenize_chunk(chunk)))
        tokenize = len(work.pairs) / tt[0]
        parts = latency_parts(model, work, args.latency_repeat, cuda)
    seconds = statistics.median(t)
    row = {"system": label, "pairs": len(work.pairs), "pairs_per_s": len(work.pairs) / seconds,
           "pairs_per_s_one_query_a_call": len(work.pairs) / tq[0], "latency_parts_ms": parts,
           "tokenize_pairs_per_s": tokenize, "repeats": len(t),
           "latency_p50_ms": 1000 * statistics.median(lat),
           "latency_p95_ms": _p95(lat),
           "latency_questions": len(each), "latency_questions_p50_ms": 1000 * statistics.median(each),
           "latency_questions_p95_ms": _p95(each),
           "latency_warm_p50_ms": 1000 * statistics.median(warm) if warm else None,
           "latency_warm_p95_ms": _p95(warm) if warm else None,
           "MRR@10": work.mrr(scores), "load_s": load,
           "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "engine": model.engine.describe() if ours else None,
           "flop_fraction": flops(model_path, work.pairs, args.max_length) / seconds / PEAK_FLOPS if cuda else None}
    del model
    if cuda:
        torch.cuda.empty_cache()
    return row, [float(s) for s in scores]



def drift_row(args, model_path, questions, relevant, candidates) -> dict:
    """The reduced-precision backends' MRR@10 drift from fp32 (ONNX fp32 scores like torch and ST:
    correlation 1.0000) on more questions than the timed rows, where one question changing its top
    rank moves MRR@10 by 1/n: ONNX int8, and OpenVINO at its precision for this CPU."""
    from rag_rerank import Reranker

    def value(**options) -> tuple[float, str]:
        reranker = Reranker(str(model_path), max_length=args.max_length, threads=args.threads, **options)
        scores = reranker.score_many(questions, candidates)
        ranked = [[d for _, d in sorted(zip(s, docs), key=lambda x: -x[0])] for s, docs in zip(scores, candidates)]
        return mrr(ranked, relevant), _short(reranker.dtype)

    fp32, _ = value(backend="onnx")
    row = {"queries": len(questions), "depth": len(candidates[0]), "MRR@10 fp32": fp32, "systems": {}}
    for label, options in (("onnx int8", dict(backend="onnx", quantize=True)), ("openvino", dict(backend="openvino"))):
        got, dtype = value(**options)
        name = label if label == "onnx int8" else f"{label} {dtype}"
        row["systems"][name] = {"MRR@10": got, "drift": got - fp32}
    return row


def _label(kind: str, backend: str, quantize: bool, dtype: str | None) -> str:
    """A row's name; ``{dtype}`` is filled with what the model got once it is loaded."""
    return f"{kind} backend={backend} " + ("int8" if quantize else "{dtype}" if dtype is None else dtype)


def _short(dtype) -> str:
    return {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), str(dtype))


PEAK_FLOPS = 989e12  # H200 (and H100 SXM) dense fp16/bf16 tensor-core peak, the "FLOP limit" of issue 15


def flops(model_path, pairs, max_length: int, truncation: str = "only_second") -> float:
    """Forward FLOPs of scoring ``pairs`` unpadded: 2 x (weights touched per token) per token, plus
    attention's two L x L products per layer. Padding and windows beyond ``max_length`` not counted
    (pairs cut by ``truncation``, as scoring cuts them; training cuts ``longest_first``)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(str(model_path))
    tok = AutoTokenizer.from_pretrained(str(model_path))
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 4 * d * d + 2 * d * ff  # ALBERT shares the layer but runs it num_hidden_layers times
    lengths = [len(ids) for ids in tok([q for q, _ in pairs], [p for _, p in pairs], truncation=truncation,
                                       max_length=max_length)["input_ids"]]
    return sum(2 * per_layer * layers * n + 4 * layers * n * n * d for n in lengths)


def albert_like(out: Path, texts: list[str]) -> Path:
    """A cross-encoder with the bongsoo/albert-small-kor-cross-encoder-v1 shape (ALBERT, embedding 128,
    hidden 768, 12 heads, FFN 3072, one shared layer run 6 times: ~11.7M parameters with its 32k vocabulary;
    here the vocabulary is what a unigram trainer makes of the corpus, which does not change the speed),
    random weights: the hub model's speed, not its scores."""
    from rag_rerank.testing import tiny_albert_cross_encoder

    if not (out / "config.json").exists():
        tiny_albert_cross_encoder(out, texts, vocab_size=32000, embedding_size=128, hidden_size=768,
                                  num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072)
    return out


# BAAI/bge-reranker-v2-m3's config.json (and its Korean fine-tunes'): XLM-RoBERTa-large, 8k positions
BGE_M3_RERANKER = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       hidden_act="gelu", max_position_embeddings=8194, type_vocab_size=1, layer_norm_eps=1e-5,
                       pad_token_id=1, bos_token_id=0, eos_token_id=2, vocab_size=250002, num_labels=1)


def xlmr_large_like(out: Path, tokenizer_from: str) -> Path:
    """A cross-encoder of bge-reranker-v2-m3's shape (XLM-RoBERTa-large, 568M parameters) with random
    weights, and the XLM-R tokenizer of ``tokenizer_from`` (the e5 models share it): the big Korean
    rerankers' speed and memory, not their scores (built offline; the hub is not reachable here)."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    if not (out / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(tokenizer_from)
        torch.manual_seed(0)
        config = XLMRobertaConfig(**dict(BGE_M3_RERANKER, vocab_size=max(BGE_M3_RERANKER["vocab_size"], len(tok)),
                                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id))  # a cut vocabulary renumbers them
        XLMRobertaForSequenceClassification(config).save_pretrained(str(out))
        tok.save_pretrained(str(out))
    return out


def encode_rows(args, questions, relevant, corpus, more=None) -> list[dict]:
    """``more``: (questions, relevant) to measure dense MRR@10 on instead (--drift-queries)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from rag_rerank.retrieval.encoder import BiEncoder

    passages = corpus[: args.passages] if args.passages else corpus
    rows, base_mrr = [], None
    systems = {"sentence-transformers SentenceTransformer.encode (fp32, batch 64)": None}
    for backend, quantize, dtype in args.backends:
        systems[_label("BiEncoder", backend, quantize, dtype)] = (backend, quantize, dtype)
    if args.device != "cpu":
        systems = {"sentence-transformers SentenceTransformer.encode (fp32, batch 64)": None,
                   "BiEncoder defaults (fp16)": ("torch", False, None)}
    for label, spec in systems.items():
        start = time.perf_counter()
        if spec is None:
            st = SentenceTransformer(str(args.encoder), device=args.device)
            embed_p = lambda texts: st.encode(texts, prompt="passage: ", batch_size=64,  # noqa: E731
                                              normalize_embeddings=True, convert_to_numpy=True)
            embed_q = lambda texts: st.encode(texts, prompt="query: ", batch_size=64,  # noqa: E731
                                              normalize_embeddings=True, convert_to_numpy=True)
        else:
            backend, quantize, dtype = spec
            enc = BiEncoder(str(args.encoder), device=args.device if backend == "torch" else None, batch_size=64,
                            backend=backend, quantize=quantize, threads=args.threads if backend != "torch" else None, dtype=dtype,
                            query_prompt="query: ", passage_prompt="passage: ")
            embed_p, embed_q = enc.embed_passages, enc.embed_queries
            label = label.format(dtype=_short(enc.dtype))  # "auto" rows name the precision this CPU got
        load = time.perf_counter() - start
        embed_p(passages[:4])  # warm-up
        vectors, t = timed(lambda: embed_p(passages), args.repeat)
        all_vectors = vectors if len(passages) == len(corpus) else embed_p(corpus)
        asked, wanted = more or (questions, relevant)
        q = embed_q(asked)
        top = np.argsort(-(q @ all_vectors.T), axis=1)[:, :10]
        value = mrr([[corpus[i] for i in row] for row in top], wanted)
        base_mrr = value if base_mrr is None else base_mrr
        rows.append({"system": label, "passages": len(passages), "passages_per_s": len(passages) / statistics.median(t),
                     "MRR@10": value, "drift": value - base_mrr, "load_s": load})
        print(f"[encode] {label}: {rows[-1]['passages_per_s']:.1f} passages/s, MRR@10 {value:.4f}", flush=True)
    return rows


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def _latency(row: dict, kind: str) -> str:
    """A row's ``latency_{kind}p50_ms / p95`` cell; "-" where it was not measured (ST has no token cache to warm)."""
    p50 = row.get(f"latency_{kind}p50_ms")
    return "-" if p50 is None else f"{p50:.1f} / {row[f'latency_{kind}p95_ms']:.1f}"


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: **{m}**. {result['queries']} KorQuAD questions x top {result['depth']} Kiwi-BM25 "
             f"passages = {result['rerank'][0]['pairs']} pairs ({result['distinct_passages']} distinct passages: "
             f"a call of all pairs encodes each once); max_length {result['max_length']}."]
    for name, rows in (("reranker `" + result["model"] + "`", result["rerank"]),
                       ("bongsoo-shaped ALBERT, random weights (speed only)", result.get("rerank_albert"))):
        if not rows:
            continue
        baselines = [r["pairs_per_s"] for r in rows if r["system"].startswith(rows[0]["system"])]
        base = statistics.mean(baselines)
        lines += ["", f"Model: {name}." + (f" vs ST: against the mean of the {len(baselines)} ST fp32 runs "
                                            f"({', '.join(f'{b:.0f}' for b in baselines)} pairs/s)."
                                            if len(baselines) > 1 else ""), "",
                  "| reranker | machine | pairs/s | vs ST | 1 x {n} p50 / p95 (ms) | 1 x {n}, {q} questions' calls | "
                  "1 x {n}, passages seen before | MRR@10 | drift | score corr. with ST | of FLOP limit | "
                  "tokenising alone (pairs/s) | one question a call (pairs/s) | load (s) | peak GPU memory (GiB) |"
                  .format(n=result["latency_docs"], q=rows[0].get("latency_questions", "-")),
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            share = f"{100 * r['flop_fraction']:.1f} %" if r.get("flop_fraction") else "-"
            lines.append(f"| {r['system']} | {m} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / base:.2f}x | "
                         f"{_latency(r, '')} | {_latency(r, 'questions_')} | {_latency(r, 'warm_')} | {r['MRR@10']:.4f} | "
                         f"{r['drift']:+.4f} | {r['score_corr']:.4f} | {share} | "
                         f"{'-' if r.get('tokenize_pairs_per_s') is None else format(r['tokenize_pairs_per_s'], '.0f')} | "
                         f"{r['pairs_per_s_one_query_a_call']:.1f} | {r['load_s']:.1f} | "
                         f"{'-' if r.get('peak_gpu_gib') is None else format(r['peak_gpu_gib'], '.2f')} |")
        for r in rows:
            if r.get("latency_parts_ms"):
                parts = ", ".join(f"{k} {v:.1f}" for k, v in r["latency_parts_ms"].items())
                recorded = (r.get("engine") or {}).get("cuda_graphs", r.get("cuda_graphs"))  # older runs: a key of the row
                graphs = f"; {recorded} CUDA graphs recorded in all" if recorded else ""
                lines.append(f"\n{r['system']}, 1 x {result['latency_docs']} call (ms, medians): {parts}{graphs}.")
    if result.get("drift"):
        d = result["drift"]
        others = "; ".join(f"{name} {v['MRR@10']:.4f} (drift {v['drift']:+.4f})" for name, v in d["systems"].items())
        lines += ["", f"Drift from fp32 (ONNX fp32, MRR@10 {d['MRR@10 fp32']:.4f}) on {d['queries']} questions x top "
                  f"{d['depth']} ({m}): {others}."]
    if result.get("encode"):
        base = result["encode"][0]["passages_per_s"]
        lines += ["", f"Bi-encoder `{result['encoder']}`: {result['encode'][0]['passages']} passages; dense "
                  f"MRR@10 of {result.get('encode_queries', result['queries'])} questions over all "
                  f"{result['corpus']} paragraphs.", "",
                  "| bi-encoder | machine | passages/s | vs ST | MRR@10 | drift | load (s) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in result["encode"]:
            lines.append(f"| {r['system']} | {m} | {r['passages_per_s']:.1f} | {r['passages_per_s'] / base:.2f}x | "
                         f"{r['MRR@10']:.4f} | {r['drift']:+.4f} | {r['load_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="cross-encoder (default: the shipped reranker, ko-reranker-e5-small)")
    p.add_argument("--encoder", help="bi-encoder (default: the offline multilingual-e5-small twin)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--depth", type=int, default=10, help="passages per question")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--latency-docs", type=int, default=10)
    p.add_argument("--latency-repeat", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1, help="timed runs of all pairs per system (median reported)")
    p.add_argument("--compile", action="store_true", help="GPU: also Reranker(compile=True)")
    p.add_argument("--batch-sizes", default="128,256", help="GPU: Reranker batch_size values timed besides the default")
    p.add_argument("--passages", type=int, default=0, help="passages timed for embedding (0: the whole corpus)")
    p.add_argument("--threads", type=int, help="the CPU backends' intra-op threads (default: one per core)")
    p.add_argument("--no-encode", action="store_true")
    p.add_argument("--albert", metavar="DIR", help="also time a bongsoo-shaped ALBERT with random weights (built in DIR)")
    p.add_argument("--only", help="time only the systems whose label matches this regex (and the ST fp32 baseline)")
    p.add_argument("--xlmr-large", metavar="DIR", help="time a bge-reranker-v2-m3-shaped XLM-R-large with random "
                   "weights (built in DIR) instead of --model: the baseline, ST fp16 and the defaults (CPU: --backends)")
    p.add_argument("--candidates", help="saved first-stage candidates to rerank (default: Kiwi BM25 over the shared "
                   "KorQuAD test articles, computed here)")
    p.add_argument("--corpus", help="with --candidates: the corpus they were searched in")
    p.add_argument("--drift-queries", type=int, default=0,
                   help="CPU: also measure int8's and OpenVINO's MRR@10 drift from fp32 on this many questions (untimed), and "
                        "the bi-encoders' dense MRR@10 on them")
    p.add_argument("--no-rerank-drift", action="store_true", help="with --drift-queries: the bi-encoders' only")
    p.add_argument("--out", help="write <out>.json and <out>.md")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    from rag_rerank import models
    args.model = args.model or models.materialize(models.SHIPPED_RERANKER)
    args.large = bool(args.xlmr_large)
    args.encoder = args.encoder or models.materialize("multilingual-e5-small")
    # (backend, int8, dtype; None: the backend's choice for this machine, named in the row once loaded)
    args.backends = [("torch", False, "fp32"), ("torch", False, "bf16"), ("onnx", False, "fp32"), ("onnx", True, None),
                     ("openvino", False, None), ("openvino", False, "fp32")]
    if args.large:  # 568M parameters (on a CPU: the backend a CPU-only user gets, beside the baseline)
        args.model = xlmr_large_like(Path(args.xlmr_large), str(args.model))
        args.backends = [("openvino", False, None)]
    questions, relevant, candidates, corpus = (saved(args.candidates, args.corpus, args.queries, args.depth)
                                               if args.candidates else korquad(args.queries, args.depth))
    result = {"machine": machine(args.device),
              "model": ("bge-reranker-v2-m3 shape (XLM-R-large, random weights: speed only) " if args.large else "")
              + str(args.model), "encoder": str(args.encoder),
              "queries": len(questions), "depth": args.depth, "corpus": len(corpus), "max_length": args.max_length,
              "distinct_passages": len({d for docs in candidates for d in docs}),
              "latency_docs": args.latency_docs, "rerank": []}
    keep = lambda: save(result, args.out)  # noqa: E731 - after each row and section
    rerank_rows(args, args.model, questions, relevant, candidates, result["rerank"], keep)
    if args.albert:
        result["rerank_albert"] = []
        rerank_rows(args, albert_like(Path(args.albert), corpus), questions, relevant, candidates,
                    result["rerank_albert"], keep)
    more = None
    if args.drift_queries:
        more = (saved(args.candidates, args.corpus, args.drift_queries, args.depth) if args.candidates
                else korquad(args.drift_queries, args.depth))
        if not args.no_rerank_drift:
            result["drift"] = drift_row(args, args.model, *more[:3])
            print(f"[drift] {result['drift']}", flush=True)
    if not args.no_encode:
        result["encode"] = encode_rows(args, questions, relevant, corpus, more and more[:2])
        result["encode_queries"] = len(more[0]) if more else len(questions)
    print(save(result, args.out))
    return 0


def save(result: dict, out: str | None) -> str:
    """``<out>.json`` and ``<out>.md`` (the tables) of what is measured so far; returns the tables."""
    text = table(result)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        out.with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    raise SystemExit(main())
