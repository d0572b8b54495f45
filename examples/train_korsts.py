"""Fine-tune a Korean cross-encoder on KorSTS and report Spearman on KorSTS test, before and after.

    python examples/train_korsts.py [--base MODEL_OR_DIR] [--preset fast] [--max-steps N] [--output DIR]

Base: bongsoo/albert-small-kor-cross-encoder-v1 when the hub is reachable, else the offline
multilingual-e5-small materialised from pip-shipped weights (its head starts untrained, so its
"before" is near 0). Training uses KorSTS train (scores / 5 as BCE targets) with KorSTS dev as the
validation part; the test part is only scored, never used to choose anything.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from scipy.stats import spearmanr

from rag_rerank import Reranker
from rag_rerank.models import ModelNotFoundError, resolve
from rag_rerank.train import load, preset, train

DATA = Path(os.environ.get("RAG_RERANK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def spearman(model: str, pairs) -> float:
    reranker = Reranker(model, max_length=128)
    scores = reranker.score_many([p.query for p in pairs], [[p.document] for p in pairs])
    return float(spearmanr([s[0] for s in scores], [p.label for p in pairs]).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="bongsoo/albert-small-kor-cross-encoder-v1")
    ap.add_argument("--preset", default="fast", choices=["seed", "fast"])
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--output", default="runs/korsts-cross-encoder")
    ap.add_argument("--test-limit", type=int, default=None, help="score only the first N test pairs")
    args = ap.parse_args()

    base = args.base
    try:
        resolve(base)
    except ModelNotFoundError:
        print(f"{base} is not reachable; using offline:multilingual-e5-small")
        base = "offline:multilingual-e5-small"
    train_data, val_data = load(DATA / "korsts" / "sts-train.tsv"), load(DATA / "korsts" / "sts-dev.tsv")
    test = load(DATA / "korsts" / "sts-test.tsv").pairs[: args.test_limit]
    overrides = dict(base_model=base, output_dir=args.output, epochs=args.epochs, max_steps=args.max_steps,
                     max_length=128, show_progress=False, metric_for_best_model="eval_loss")
    if args.batch_size:
        overrides["per_device_batch_size"] = args.batch_size
    before = spearman(base, test)
    result = train(preset(args.preset, **overrides), train_data, val_data,
                   data_description="KorSTS train (Ham et al. 2020, CC BY-SA 4.0), validation KorSTS dev")
    after = spearman(str(result.output_dir), test)
    print(f"KorSTS test Spearman ({len(test)} pairs): before {before:.4f} -> after {after:.4f}")


if __name__ == "__main__":
    main()
