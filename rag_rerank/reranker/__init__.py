"""The Korean cross-encoder reranker.

``Reranker`` scores (query, document) pairs with a sequence-classification
model. What it adds over a bare ``CrossEncoder.predict``:

* padding-free passes (``rag_rerank.packed``: a pass computes only real tokens, attention kept
  within each pair) up to a token budget, with one device sync per call, not one per batch; models
  of other families get length-sorted padded passes;
* on CUDA, each packed pass replayed from a recorded CUDA graph (``rag_rerank.graphs``): one launch
  instead of hundreds of small kernel launches from Python;
* large calls tokenised in a background thread while the model runs the previous chunk, and a
  document's token ids kept between calls (``cache_tokens``): a passage seen before is not
  tokenised again;
* long documents split into overlapping token windows, the document scoring
  the max (or mean / first) over its windows instead of being silently cut;
* safe sharing across threads (one tokenizer copy per thread: HF fast
  tokenizers mutate their truncation state on every call);
* strict input checks with errors that say which item is wrong;
* CPU backends: the same model exported to ONNX and run by ONNX Runtime (``backend="onnx"``:
  fp32, or int8 weights with ``quantize=True``) or OpenVINO (``backend="openvino"``: bf16 on CPUs
  with bf16 units, 3.7x sentence-transformers on 2 cores).
"""
from __future__ import annotations

import copy
import logging
import threading
from collections import defaultdict
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .. import models
from ..models import export as onnx_backend
from ..models.devices import resolve_device, resolve_dtype
from ..models import DEFAULT_RERANKER
from ..types import RankedDoc, activate, check_docs, check_groups, check_int, check_number, check_query
from .engine import EngineSettings, load_engine
from .pairs import PairEncoder, TokenCache, Windows

__all__ = ["DEFAULT_RERANKER", "Aggregate", "EngineSettings", "RankedDoc", "Reranker"]
Aggregate = Literal["max", "mean", "first"]
log = logging.getLogger("rag_rerank")
Backend = Literal["auto", "torch", "onnx", "openvino"]


class Reranker:
    """Cross-encoder reranker.

    Args:
        model: hub name, local directory (sentence-transformers CrossEncoder
            layout or a plain ``*ForSequenceClassification`` directory) or
            ``offline:NAME``.
        device: ``"cuda"``, ``"mps"``, ``"cpu"``, ``"cuda:1"``...; auto picks cuda > mps > cpu.
        dtype: ``"bf16"``, ``"fp16"``, ``"fp32"`` or a ``torch.dtype``; auto picks fp16 on CUDA
            (encoder activations stay far inside its range, and it keeps 3 more mantissa bits than
            bf16: closer to fp32), fp32 on CPU; with ``backend="openvino"`` OpenVINO's choice for
            this CPU (bf16 where it has bf16 units, else fp32; ``"fp32"`` forces fp32), and
            ``backend="onnx"`` computes in fp32. ``self.dtype`` says what was chosen. Non-finite
            logits raise instead of ranking garbage.
        max_length: tokens per (query, window) pair, capped by the model's positions.
        batch_size: pairs per forward pass at full length: a pass holds at most
            ``batch_size x max_length`` tokens, so shorter pairs are packed more to a pass.
            Default 64 on CUDA (a GPU needs large passes to be busy, yet on an H200 an e5-small ran
            64 x 512-token passes 17 % faster than 128 and as fast as 32-48: bench/rerank_speed.py,
            BENCHMARKS.md session 13), 32 elsewhere.
        window_overlap: share of a window (``max_length`` less the special tokens) repeated in the next
            window of a long document.
        aggregate: how a long document's window scores combine: max, mean or first.
        max_query_fraction: share of ``max_length`` a long query may use; the rest is
            left for the document.
        backend: ``"auto"`` (default: :func:`~rag_rerank.onnx_backend.choose_backend` - torch on a GPU; on
            a CPU OpenVINO where installed, else ONNX Runtime, else torch; ``RAG_RERANK_BACKEND`` overrides
            it; ``self.backend`` and ``self.backend_reason`` say what it chose and why), ``"torch"`` (any
            device), ``"onnx"`` (CPU: ONNX Runtime) or ``"openvino"`` (CPU: OpenVINO, ``pip install
            'rag-rerank[openvino]'``); the CPU backends run the model exported once to ONNX (tens of seconds
            at the first load) and cached beside the weights. On 2 CPU cores OpenVINO is the fastest:
            4.0x sentence-transformers with bf16 units (AVX512-BF16, no AMX), bench/rerank_speed.py.
        engine: the speed switches in one object (:class:`~rag_rerank.reranker.engine.EngineSettings`:
            ``quantize``, ``threads``, ``compile``, ``pack``, ``cuda_graphs``, ``fused_ffn``, ``fused_norm``);
            each may also be given as a keyword of its own (``Reranker(m, pack=False)``), laid over
            ``engine``. None of them changes what is computed beyond precision; ``self.engine`` is the
            engine they chose and ``self.engine.describe()`` says what it is.
        cache_tokens: documents' token ids kept between calls, in tokens (int32; with the texts, about
            15 MB for the default 2M, ~7,000 KorQuAD passages), least recently used dropped first; 0
            keeps none. A first stage over one corpus returns its popular passages query after query,
            and on an H200 tokenising one question's 50 passages takes as long as scoring them (1 x 50
            p50 5.2 ms with their ids known, 8.2 ms without: BENCHMARKS.md, session 14).
            ``self.token_cache`` holds them (``.clear()`` frees them).

    A reranker only scores pairs. How its ranking is fused with a first stage (the settings
    ``rag-rerank train`` saves beside the model) is the retrievers' business:
    :class:`~rag_rerank.pipeline.TwoStageRetriever` reads them from ``self.path``.
    """

    def __init__(self, model: str = DEFAULT_RERANKER, *, device: str | None = None,
                 dtype: str | torch.dtype | None = None, max_length: int = 512, batch_size: int | None = None,
                 window_overlap: float = 0.25, aggregate: Aggregate = "max",
                 max_query_fraction: float = 0.5, trust_remote_code: bool = False,
                 revision: str | None = None, local_files_only: bool | None = None,
                 backend: Backend = "auto", cache_tokens: int = 2_000_000, engine: EngineSettings | None = None,
                 **speed) -> None:
        from transformers import AutoConfig, AutoTokenizer

        settings = EngineSettings.of(engine, **speed, **({} if batch_size is None else {"batch_size": batch_size}))
        # what pickling sends instead of weights, tokenizers and threads (see __reduce__)
        self._init_args = dict(model=str(model), device=device, dtype=dtype, max_length=max_length,
                               window_overlap=window_overlap, aggregate=aggregate,
                               max_query_fraction=max_query_fraction, trust_remote_code=trust_remote_code,
                               revision=revision, local_files_only=local_files_only, backend=backend,
                               cache_tokens=cache_tokens, engine=settings)
        if aggregate not in ("max", "mean", "first"):
            raise ValueError(f"aggregate must be 'max', 'mean' or 'first', got {aggregate!r}")
        window_overlap = check_number(window_overlap, "window_overlap", 0, 1, high_open=True)
        max_query_fraction = check_number(max_query_fraction, "max_query_fraction", 0, 1, low_open=True)
        max_length = check_int(max_length, "max_length")  # one too small for a document is refused below
        cache_tokens = check_int(cache_tokens, "cache_tokens", minimum=0)  # 0: keep no token ids
        if settings.compile and backend in onnx_backend.CPU_BACKENDS:
            raise ValueError(f"compile applies to backend='torch' ({backend!r} compiles the exported graph itself)")
        chosen, self.backend_reason = onnx_backend.choose_backend(backend, device, quantize=settings.quantize,
                                                                  compile=settings.compile,
                                                                  trust_remote_code=trust_remote_code)
        backend = chosen
        cpu_backend = onnx_backend.check_options(backend, device, settings.quantize, settings.threads)
        self.model_name = str(model)
        self.backend = backend
        self.path = models.resolve(model, revision=revision, local_files_only=local_files_only)
        self.device = resolve_device("cpu" if cpu_backend else device)
        if dtype in (None, "auto") and self.device.type == "cuda":
            dtype = "fp16"
        self.window_overlap = window_overlap
        self.aggregate = aggregate
        self.max_query_fraction = max_query_fraction

        if self.path.is_dir() and not any((self.path / f).exists() for f in _TOKENIZER_FILES):
            raise ValueError(f"{self.path}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}, ...): a model saved "
                             "without its tokenizer cannot read text; save it beside the weights "
                             "(tokenizer.save_pretrained(path))")
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(str(self.path), trust_remote_code=trust_remote_code)
        vocab = getattr(config, "vocab_size", None)
        if isinstance(vocab, int) and len(self._tokenizer) > vocab:
            # text may reach any ordinary token; a special one past the table (a <mask> added last) never comes
            special = set(self._tokenizer.all_special_tokens)
            beyond = [t for t, i in self._tokenizer.get_vocab().items() if i >= vocab and t not in special]
            if beyond:
                raise ValueError(f"{self.path}: the tokenizer has {len(self._tokenizer)} tokens but the model's "
                                 f"embeddings {vocab} (config.json vocab_size; {beyond[0]!r} is past them): the "
                                 "tokenizer belongs to another model")
        self.num_labels = config.num_labels
        if self.num_labels > 2:
            raise ValueError(f"{self.model_name} has {self.num_labels} labels; a reranker needs 1 "
                             "(a relevance logit) or 2 (not relevant / relevant)")
        positions = getattr(config, "max_position_embeddings", max_length) or max_length
        tok_max = self._tokenizer.model_max_length if self._tokenizer.model_max_length < 10**6 else max_length
        self.max_length = min(max_length, positions, tok_max)
        self._local = threading.local()
        self.token_cache = TokenCache(cache_tokens)  # shared by every thread's pair encoder
        pad_id = self._pairs.pad_id  # built now: it refuses a max_length that leaves no room for a document

        def load(on: str):
            return load_engine(self.path, config, settings, backend=on, device=self.device,
                               dtype=dtype if on != "torch" else resolve_dtype(dtype, self.device),
                               max_length=self.max_length, pad_id=pad_id, num_labels=self.num_labels,
                               trust_remote_code=trust_remote_code, name=self.model_name)

        try:
            self.engine = load(backend)
        except Exception as exc:
            if not cpu_backend:
                raise
            # chosen, not asked for: a model the exporter cannot take loads in torch
            self.backend_reason = onnx_backend.torch_instead("Reranker", self._init_args["backend"], backend,
                                                             self.model_name, exc)
            self.backend = "torch"
            self.engine = load("torch")
        self._activation = _activation_name(self.path, self.num_labels)
        self._tokenizing = None  # the background tokenisation thread, started by the first call of 2+ chunks
        # Where passes replay CUDA graphs a call of a few dozen pairs is cut in pieces, so that each is
        # tokenised while the device runs the one before (tokenising 1 x 50 KorQuAD pairs takes as long
        # as their pass on an H200). Elsewhere one chunk: on a CPU tokenising and scoring share the cores,
        # and a pass launched op by op costs its launches again per piece (H200, 1 x 50 p50 with three
        # pieces: cuda_graphs=False 32 ms, pack=False 28-42 ms, against 20-26 and 18-25 with two).
        self._split_small_calls = getattr(self.engine, "graphs", None) is not None
        if self.model is not None and self.device.type == "cuda":
            self._warm_up()
        log.info("Reranker %s: backend=%s (%s), dtype=%s", self.model_name, self.backend, self.backend_reason,
                 str(self.dtype).replace("torch.", ""))

    @property
    def model(self):
        """The torch module that scores (None where an exported graph runs: ``backend`` onnx / openvino)."""
        return self.engine.model

    @property
    def dtype(self) -> torch.dtype:
        """What the engine computes in (for an exported graph: the precision its runtime chose)."""
        return self.engine.dtype

    @property
    def asynchronous(self) -> bool:
        """Whether :meth:`launch_many` returns before the scores exist (a torch model on a GPU: its passes are
        queued on the device). Elsewhere launching computes them, and a caller gains nothing by launching the
        next call before collecting this one (the HTTP batcher then scores each batch whole)."""
        return self.model is not None and self.device.type == "cuda"

    @property
    def batch_size(self) -> int:
        """Pairs per pass at full length (the engine's token budget is ``batch_size x max_length``)."""
        return self.engine.batch_size

    # ------------------------------------------------------------------ API
    def score(self, query: str, docs: Sequence[str], *, raw: bool = False) -> list[float]:
        """Relevance of each document to ``query``, in input order.

        Scores pass through the model's activation (sigmoid for one logit, the
        relevant class's probability for two) into [0, 1]; ``raw=True`` gives logits.
        """
        query = check_query(query)
        docs = check_docs(docs)
        return self._score_groups([(query, docs)], raw=raw)[0]

    def rerank(self, query: str, docs: Sequence[str], top_n: int | None = None) -> list[RankedDoc]:
        """Documents sorted by descending score; ties keep input order."""
        return self.rerank_many([query], [docs], top_n=top_n)[0]

    def score_many(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]], *,
                   raw: bool = False) -> list[list[float]]:
        """Batch form of :meth:`score`: all pairs of all queries share length-sorted batches."""
        return self.launch_many(queries, docs_per_query, raw=raw)()

    def launch_many(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]], *,
                    raw: bool = False) -> Callable[[], list[list[float]]]:
        """:meth:`score_many` in two halves: this call checks, tokenises and queues every pass on the device,
        and returns a function that waits for the scores. Between the two a caller can prepare or queue the next
        call, so the device goes from one call's passes to the next without waiting for the host (the HTTP
        service's batcher does: :class:`rag_rerank.serve.MicroBatcher`). On a CPU the work is done here and
        the function only hands it over."""
        return self._launch_groups(check_groups(queries, docs_per_query), raw=raw)

    def rerank_many(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]],
                    top_n: int | None = None) -> list[list[RankedDoc]]:
        if top_n is not None:
            try:
                top_n = check_int(top_n, "top_n", minimum=1)  # numpy integers too
            except ValueError:
                raise ValueError(f"top_n must be a positive integer or None (all), got {top_n!r}") from None
        if isinstance(docs_per_query, (str, bytes)):
            raise TypeError("docs_per_query must be a sequence of document lists")
        docs_per_query = [check_docs(d) for d in docs_per_query]  # generators read once, here
        all_scores = self.score_many(queries, docs_per_query)
        out = []
        for docs, scores in zip(docs_per_query, all_scores):
            order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
            out.append([RankedDoc(i, scores[i], docs[i]) for i in order[:top_n]])
        return out

    def __reduce__(self):
        """Pickled as its arguments and reloaded where it is unpickled (a worker process, Ray,
        Celery): weights, a tokenizer per thread and the tokenising thread do not travel.
        A torch.dtype argument pickles as itself."""
        return _rebuild, (self._init_args,)

    def __repr__(self) -> str:
        where = f"device={str(self.device)!r}, dtype={self.dtype}"
        if self.backend != "torch":
            where = f"backend={self.backend!r}, dtype={self.dtype}" + (
                ", int8 weights" if self.engine.describe().get("precision") == "int8" else "")
        return (f"Reranker(model={self.model_name!r}, {where}, max_length={self.max_length}, "
                f"batch_size={self.batch_size})")

    # ------------------------------------------------------------- internals
    @property
    def tokenizer(self):
        """This thread's tokenizer (fast tokenizers are not safe to share across threads)."""
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self._tokenizer)
        return tok

    @property
    def _pairs(self) -> PairEncoder:
        """This thread's pair encoder (it owns this thread's tokenizer's backend)."""
        pairs = getattr(self._local, "pairs", None)
        if pairs is None:
            pairs = self._local.pairs = PairEncoder(self.tokenizer, self.max_length, self.max_query_fraction,
                                                    self.window_overlap, self.token_cache)
        return pairs

    # Pairs tokenised per chunk; a call with more is tokenised chunk by chunk in a background thread
    # while the model scores the chunk before (fast tokenizers release the GIL), so the device is
    # not idle while the CPU tokenises. Large enough that length sorting within a chunk still packs
    # well; the first chunk is a quarter of that, so the device starts sooner.
    CHUNK_PAIRS = 2048
    # Smallest call cut in pieces where passes replay graphs (8 pairs a piece at least): below it one more pass
    # costs more than it hides. A small call is cut in three pieces: piece k+1 is tokenised while the
    # device runs piece k. H200, 1 x 50 KorQuAD pairs, p50 of 100 calls: one piece 10.3 ms, two 9.1,
    # three 8.8, four 9.5, six 11.1 (bench/results/speed_h200_s13/call2/latency_probe.log). Counted in
    # documents the token cache lacks: with every passage's ids known one piece is best (5.2 ms, three
    # 7.8: bench/results/speed_h200_s14/call2/probe2.log), as there is nothing to hide.
    SPLIT_MIN_PAIRS = 16
    SMALL_CALL_PIECES = 3

    def _score_groups(self, groups: list[tuple[str, list[str]]], raw: bool) -> list[list[float]]:
        return self._launch_groups(groups, raw)()

    def _launch_groups(self, groups: list[tuple[str, list[str]]], raw: bool) -> Callable[[], list[list[float]]]:
        unique, places = _distinct_pairs(groups)
        all_owners, launched = self._launch_chunks(unique)

        def scores() -> list[list[float]]:
            logits: dict[tuple[int, int], list[float]] = defaultdict(list)  # (group, doc) -> its windows' logits
            for owners, run in zip(all_owners, launched):
                for owner, value in zip(owners, self._collect(*run)):
                    logits[owner].append(value)
            out = []
            for where in places:
                values = [_combine(logits[at], self.aggregate) for at in where]
                out.append(values if raw else self.relevance(values))
            return out

        return scores

    def relevance(self, logits: Sequence[float]) -> list[float]:
        """Raw scores (``score(..., raw=True)``) through the model's activation into [0, 1], as
        :meth:`score` gives them (a service can score once and answer in either form)."""
        return [activate(v, self._activation) for v in logits]

    def _chunks(self, groups) -> list[list[tuple[int, int, str, list[str]]]]:
        """Groups cut into chunks of (group, first doc index, query, docs), a query's documents split
        across chunks where they do not fit. The first chunk is a quarter of ``CHUNK_PAIRS``, the
        others ``CHUNK_PAIRS``; a call split in pieces (see ``_split_small_calls``) whose pieces are
        smaller than that is cut in equal pieces instead."""
        room, later = max(1, self.CHUNK_PAIRS // 4), self.CHUNK_PAIRS
        total = sum(len(docs) for _, docs in groups)
        if self._split_small_calls and self.SPLIT_MIN_PAIRS <= total < self.SMALL_CALL_PIECES * room:
            cold = self.token_cache.missing(d for _, docs in groups for d in docs)
            if cold >= self.SPLIT_MIN_PAIRS:
                pieces = min(self.SMALL_CALL_PIECES, cold // (self.SPLIT_MIN_PAIRS // 2))
                piece = -(-total // pieces)
                if piece < room:
                    room = later = piece
        chunks = [[]]
        for g, (query, docs) in enumerate(groups):
            start = 0
            while start < len(docs):
                if room == 0:
                    chunks.append([])
                    room = later
                part = docs[start : start + room]
                chunks[-1].append((g, start, query, part))
                start += len(part)
                room -= len(part)
        return chunks

    def _launch_chunks(self, groups):
        """(owners per chunk, launched passes per chunk): chunk k+1 is tokenised while chunk k runs. Every
        chunk's passes are queued before the host waits for any logits (in the caller, after this), so the
        device goes from one chunk to the next without waiting for the host."""
        chunks = self._chunks(groups)
        if len(chunks) == 1:
            windows = self._tokenize_chunk(chunks[0])
            return [windows.owners], [self._launch(windows)]
        if self._tokenizing is None:
            from concurrent.futures import ThreadPoolExecutor

            self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="rag-rerank-tokenize")
        all_owners, launched = [], []
        pending = self._tokenizing.submit(self._tokenize_chunk, chunks[0])
        for k in range(len(chunks)):
            windows = pending.result()
            if k + 1 < len(chunks):
                pending = self._tokenizing.submit(self._tokenize_chunk, chunks[k + 1])
            all_owners.append(windows.owners)
            launched.append(self._launch(windows))
        return all_owners, launched

    def _tokenize_chunk(self, chunk) -> Windows:
        """Every window of every (query, document) of a chunk; in whichever thread calls it."""
        return self._pairs.windows(chunk)

    def _forward(self, windows: Windows) -> list[float]:
        """Every window's logit, in window order."""
        return self._collect(*self._launch(windows))

    def _launch(self, windows: Windows) -> tuple[list[int], torch.Tensor | None, "torch.cuda.Event | None"]:
        """Queues every pass of ``windows`` on the engine and, on a GPU, the copy of their values to the host
        right behind them, with an event marking its end: :meth:`_collect` waits for this call's passes only,
        not for passes launched after it (the HTTP batcher's next batch)."""
        order, values = self.engine.run(self._pairs, windows)
        if values is None or not values.is_cuda:
            return order, values, None
        stream = torch.cuda.current_stream(values.device)  # the values' card's, not this thread's current card
        values = values.float().to("cpu", non_blocking=True)  # asynchronous: not to be read before ``done``
        done = torch.cuda.Event()
        done.record(stream)
        return order, values, done

    def _collect(self, order: list[int], values: torch.Tensor | None, done=None) -> list[float]:
        """The launched values on the host (the host waits for the device here), in window order."""
        if values is None:
            return []
        if done is not None:
            done.synchronize()
        values = values.float()
        if not torch.isfinite(values).all():
            # fp16's range overflows where bf16 and fp32 do not; in fp32 the cause is the model or its input
            hint = {torch.float16: "load it with dtype='bf16' or 'fp32'", torch.bfloat16: "load it with dtype='fp32'"}
            raise FloatingPointError(f"{self.model_name} gave non-finite logits in {self.dtype}; " + hint.get(
                self.dtype, "not a precision overflow: check its weights for NaN or inf (a damaged or diverged "
                            "checkpoint)"))
        logits = [0.0] * len(order)
        for i, v in zip(order, values.tolist()):
            logits[i] = v
        return logits

    def _warm_up(self) -> None:
        """One short and one full-size pass at load: CUDA context, cuBLAS handles and the caching
        allocator are set up here, so the first real call is not several times slower."""
        pairs = self._pairs
        for rows, width in ((2, 16), (self.batch_size, self.max_length)):
            doc = width - pairs.specials - 1
            self._forward(Windows(queries=[np.full(1, pairs.pad_id)], docs=[np.full(doc, pairs.pad_id)],
                                  query=[0] * rows, doc=[0] * rows, start=[0] * rows, end=[doc] * rows,
                                  owners=[(0, i) for i in range(rows)]))


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model",
                    "spiece.model", "vocab.json")


def _rebuild(kwargs: dict) -> "Reranker":
    return Reranker(**kwargs)


def _distinct_pairs(groups: list[tuple[str, list[str]]]) -> tuple[list[tuple[str, list[str]]], list[list[tuple[int, int]]]]:
    """The call's distinct (query, document) pairs, grouped by query, and where each input pair's score is found
    ((group, document) in them). A pair given twice - a chunk indexed twice, a query repeated in a batch - is
    scored once, so its copies get one score and keep their input order when ranked; scored apart, rows of one
    batch can differ in the last bits (a GEMM's blocking depends on the row) and copies came out in any order."""
    unique: list[tuple[str, list[str]]] = []
    by_query: dict[str, tuple[int, dict[str, int]]] = {}
    places = []
    for query, docs in groups:
        if query not in by_query:
            by_query[query] = (len(unique), {})
            unique.append((query, []))
        g, seen = by_query[query]
        where = []
        for doc in docs:
            if doc not in seen:
                seen[doc] = len(unique[g][1])
                unique[g][1].append(doc)
            where.append((g, seen[doc]))
        places.append(where)
    return unique, places


def _combine(values: list[float], how: str) -> float:
    if how == "max":
        return max(values)
    if how == "mean":
        return sum(values) / len(values)
    return values[0]


def _activation_name(path: Path, num_labels: int) -> str:
    """sigmoid unless the model's saved sentence-transformers config says identity."""
    saved = None
    for name, key in (("config_sentence_transformers.json", None), ("config.json", "sentence_transformers")):
        data = models.read_json(path / name)
        if data is None:
            continue
        data = data.get(key, {}) if key else data
        if isinstance(data, dict) and data.get("activation_fn"):
            saved = data["activation_fn"]
            break
    if saved and saved.endswith("Identity") and num_labels == 1:
        return "identity"
    return "sigmoid"
