"""Package a reranker trained with ``rag-rerank train --lora`` as the compact model the package ships.

    python -m rag_rerank.train.ship TRAINED_DIR BASE_DIR OUT_DIR [--rank 16]

Writes OUT_DIR: the delta against BASE_DIR (:mod:`rag_rerank.models.delta`: the merged LoRA updates as
rank-r fp16 factors + the head, and the files a loader reads beside the weights: config,
sentence-transformers files, rag_rerank.json with the tuned fusion and hybrid), the training metrics
(less the loss curve), and reference.json: raw logits of the TRAINED model on Korean pairs from the demo
corpus (held-out KorQuAD articles), which tests/test_shipped.py compares with the model
``models.materialize`` rebuilds from the delta. Run where the trained model is; OUT_DIR is a few MB.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def reference_pairs() -> list[tuple[str, str]]:
    """Per demo article: its first question with the paragraph it was asked on and with the next one."""
    from rag_rerank import demo

    pairs = []
    for article in demo.load_articles():
        paragraphs = article["paragraphs"]
        question = paragraphs[0]["qas"][0]["question"]
        pairs.append((question, paragraphs[0]["context"]))
        pairs.append((question, paragraphs[1 % len(paragraphs)]["context"]))
    return pairs


def ship(trained: str | Path, base: str | Path, out: str | Path, *, rank: int = 16,
         base_name: str = "multilingual-e5-small", pairs: list[tuple[str, str]] | None = None) -> dict:
    """Export ``trained`` as a delta against ``base`` into ``out`` with its metrics and reference logits
    (on ``pairs``, default :func:`reference_pairs`); returns what was stored."""
    import torch

    from rag_rerank import Reranker
    from rag_rerank.models.delta import DELTA_FILE, export_delta

    trained, out = Path(trained), Path(out)
    if not (trained / "metrics.json").is_file():
        raise FileNotFoundError(f"TRAINED_DIR {trained}: no metrics.json - not a `rag-rerank train` output")
    info = export_delta(trained, base, out, rank=rank, base_name=base_name)
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    metrics.pop("history", None)  # the loss curve: not needed to load or judge the model
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False, default=str),
                                               encoding="utf-8")
    pairs = reference_pairs() if pairs is None else pairs
    reranker = Reranker(str(trained), dtype=torch.float32)
    logits = [reranker.score(q, [d], raw=True)[0] for q, d in pairs]
    (out / "reference.json").write_text(json.dumps(
        {"made_with": f"Reranker({trained.name!r}, dtype=float32) on {reranker.device}, torch {torch.__version__}",
         "pairs": [{"query": q, "document": d, "logit": s} for (q, d), s in zip(pairs, logits)]},
        indent=1, ensure_ascii=False), encoding="utf-8")
    return {"factored": len(info["factored"]), "whole": info["whole"], "parameters_stored": info["parameters_stored"],
            "bytes": (out / DELTA_FILE).stat().st_size, "logits": logits}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rag_rerank.train.ship", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trained")
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--base-name", default="multilingual-e5-small",
                   help="the offline name the loader rebuilds the base from (models.materialize)")
    args = p.parse_args(argv)
    print(json.dumps(ship(args.trained, args.base, args.out, rank=args.rank, base_name=args.base_name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
