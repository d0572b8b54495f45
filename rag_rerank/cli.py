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
