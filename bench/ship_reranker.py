"""Package a reranker trained with `rag-rerank train --lora` as the compact model the package ships.

    python bench/ship_reranker.py TRAINED_DIR BASE_DIR OUT_DIR [--rank 16]

Writes OUT_DIR: the delta against BASE_DIR (rag_rerank.models.delta: the merged LoRA updates as
rank-r fp16 factors + the head, and the files a loader reads beside the weights: config,
sentence-transformers files, rag_rerank.json with the tuned fusion and hybrid), the
training metrics, and reference.json: raw logits of the TRAINED model on Korean pairs from the
demo corpus (held-out KorQuAD articles), which tests/test_shipped.py compares with the model
`models.materialize` rebuilds from the delta.
Run where the trained model is (the GPU machine); OUT_DIR is a few MB.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag_rerank import demo  # noqa: E402
from rag_rerank.models.delta import DELTA_FILE, export_delta  # noqa: E402


def reference_pairs() -> list[tuple[str, str]]:
    """Per demo article: its first question with the paragraph it was asked on and with the next one."""
    pairs = []
    for article in demo.load_articles():
        paragraphs = article["paragraphs"]
        question = paragraphs[0]["qas"][0]["question"]
        pairs.append((question, paragraphs[0]["context"]))
        pairs.append((question, paragraphs[1 % len(paragraphs)]["context"]))
    return pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trained")
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--base-name", default="multilingual-e5-small",
                   help="the offline name the loader rebuilds the base from (models.materialize)")
    args = p.parse_args(argv)
    trained, out = Path(args.trained), Path(args.out)
    info = export_delta(trained, args.base, out, rank=args.rank, base_name=args.base_name)
    metrics = json.loads((trained / "metrics.json").read_text())
    metrics.pop("history", None)  # the loss curve: not needed to load or judge the model
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False, default=str))

    import torch

    from rag_rerank import Reranker

    pairs = reference_pairs()
    reranker = Reranker(str(trained), dtype=torch.float32)
    logits = [reranker.score(q, [d], raw=True)[0] for q, d in pairs]
    (out / "reference.json").write_text(json.dumps(
        {"made_with": f"Reranker({trained.name!r}, dtype=float32) on {reranker.device}, torch {torch.__version__}",
         "pairs": [{"query": q, "document": d, "logit": s} for (q, d), s in zip(pairs, logits)]},
        indent=1, ensure_ascii=False))
    print(json.dumps({"factored": len(info["factored"]), "whole": info["whole"],
                      "parameters_stored": info["parameters_stored"],
                      "bytes": (out / DELTA_FILE).stat().st_size, "logits": logits}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
