"""Training throughput and peak GPU memory: the `seed` preset vs `fast` vs low-memory settings.

Model: the bongsoo/albert-small-kor-cross-encoder-v1 architecture (ALBERT, embedding 128 ->
hidden 768, 12 passes of one shared layer, 12 heads, FFN 3072, gelu_new, ~11.7M parameters)
with random weights and a 32k unigram tokenizer trained on the Korean data (the hub is not
reachable here; throughput does not depend on the weights). max_length 512 everywhere.
Data: KorNLI (XNLI ko) dev+test pairs labelled entailment=1, else 0, plus KorSTS train
(score / 5): ~13k real Korean pairs with their natural lengths.

    python bench/train_speed.py --data ../shared/data --out bench-out [--variants seed,fast,...]

Prints one Markdown table (pairs/s, ratio to `seed`, peak GPU memory) and writes
results.json. Each variant runs in the same process, one after another.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from rag_rerank.testing import tiny_albert_cross_encoder  # noqa: E402
from rag_rerank.train import ScoredPair, TrainingData, preset, train  # noqa: E402
from rerank_speed import PEAK_FLOPS, flops  # noqa: E402

BONGSOO_SHAPE = dict(embedding_size=128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, classifier_dropout_prob=0.1, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)


def load_pairs(data: Path) -> list[ScoredPair]:
    pairs = []
    for split in ("dev", "test"):
        for line in list((data / "kornli" / f"xnli.{split}.ko.tsv").open(encoding="utf-8"))[1:]:
            prem, hyp, label = line.rstrip("\n").split("\t")
            pairs.append(ScoredPair(hyp, prem, 1.0 if label == "entailment" else 0.0))
    for line in list((data / "korsts" / "sts-train.tsv").open(encoding="utf-8"))[1:]:
        cols = line.rstrip("\n").split("\t")
        if len(cols) >= 7:
            pairs.append(ScoredPair(cols[5], cols[6], float(cols[4]) / 5.0))
    return pairs


def variants(seed_steps: int, epochs: float) -> dict[str, dict]:
    common = dict(max_length=512, show_progress=False, validation_fraction=0.05)
    fast = dict(preset="fast", epochs=epochs, **common)
    return {
        # the original recipe, as it was run: eval + checkpoint every 50 steps
        "seed": dict(preset="seed", max_steps=seed_steps, **common),
        # first bf16 run of the process pays cuBLAS/allocator warm-up: run once, not reported
        "warm-up": dict(fast, epochs=0.3),
        # the throughput preset
        "fast": dict(fast),
        # where the time goes: fast minus one ingredient at a time, then other batch sizes
        "fast, gelu_new in Python": dict(fast, fused_gelu=False),
        "fast, tokenise in loss (main process)": dict(fast, pretokenize=False),
        "fast, random batches": dict(fast, group_by_length=False),
        "fast, batch 64": dict(fast, per_device_batch_size=64, learning_rate=5e-5),
        "fast, batch 512": dict(fast, per_device_batch_size=512, learning_rate=2e-4),
        # low memory: small batches, but bf16, fused GELU, grouped, tokenised in workers, no mid-run eval/save
        "low-memory (batch 4 x 4)": dict(fast, per_device_batch_size=4, gradient_accumulation_steps=4,
                                         epochs=0, max_steps=250, learning_rate=2e-5),
        "low-memory (batch 8)": dict(fast, per_device_batch_size=8, epochs=0, max_steps=500, learning_rate=3e-5),
        "low-memory (batch 8, frozen embeddings)": dict(fast, per_device_batch_size=8, epochs=0, max_steps=500,
                                                        freeze=["embeddings"], learning_rate=3e-5),
        "low-memory (batch 10, LoRA)": dict(fast, per_device_batch_size=10, epochs=0, max_steps=400, lora=True,
                                            learning_rate=3e-4),
        # ALBERT's 12 passes each keep their activations; checkpointing them (our own wrapper:
        # transformers refuses ALBERT) trades ~1/3 more compute for batches large enough to
        # escape the per-step overhead at a small memory peak
        "low-memory (batch 32, checkpointed passes)": dict(fast, per_device_batch_size=32, epochs=0, max_steps=200,
                                                           gradient_checkpointing=True, learning_rate=5e-5),
        "low-memory (batch 64, checkpointed passes)": dict(fast, per_device_batch_size=64, epochs=0, max_steps=150,
                                                           gradient_checkpointing=True, learning_rate=5e-5),
        "low-memory (batch 64, checkpointed passes, frozen embeddings)": dict(
            fast, per_device_batch_size=64, epochs=0, max_steps=150, gradient_checkpointing=True,
            freeze=["embeddings"], learning_rate=5e-5),
        "low-memory (batch 128, checkpointed passes, frozen embeddings)": dict(
            fast, per_device_batch_size=128, epochs=0, max_steps=100, gradient_checkpointing=True,
            freeze=["embeddings"], learning_rate=1e-4),
    }


def korquad_pairs(path: Path) -> list[ScoredPair]:
    """KorQuAD-length pairs: each question with its paragraph (1) and up to three other paragraphs of its
    article (0)."""
    pairs = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        contexts = [p["context"] for p in article["paragraphs"]]
        for i, para in enumerate(article["paragraphs"]):
            others = [c for j, c in enumerate(contexts) if j != i]
            for k, qa in enumerate(para["qas"]):
                pairs.append(ScoredPair(qa["question"], para["context"], 1.0))
                pairs += [ScoredPair(qa["question"], others[(k + j) % len(others)], 0.0) for j in range(min(3, len(others)))]
    return pairs


def e5_variants(seed_steps: int, epochs: float) -> dict[str, dict]:
    """The e5-small cross-encoder (issue 39 item 4): padded vs packed batches of the fast preset; the seed
    preset as it is (it never packs)."""
    fast = dict(preset="fast", max_length=512, show_progress=False, validation_fraction=0.05, epochs=epochs)
    return {"seed": dict(preset="seed", max_steps=seed_steps, max_length=512, show_progress=False,
                         validation_fraction=0.05),
            "warm-up": dict(fast, epochs=0.3),
            "fast, padded batches (pack false)": dict(fast, pack=False),
            "fast (packed batches)": dict(fast),
            "fast, packed, batch 512": dict(fast, per_device_batch_size=512, learning_rate=2e-4)}


class StepClock:
    """Steady-state pairs/s: the steps after the first ``skip`` (start-up, compilation) to the last, timed
    at step ends with the GPU synchronised; the checkpoint save and final evaluation after them are left out."""

    def __init__(self, skip: int = 10) -> None:
        self.skip, self.marks = skip, {}

    def __getattr__(self, name):  # every other TrainerCallback event: nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.skip, state.max_steps):
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            self.marks[state.global_step] = time.perf_counter()

    def pairs_per_s(self, batch: int) -> float | None:
        (a, ta), (b, tb) = sorted(self.marks.items())[0], sorted(self.marks.items())[-1]
        return (b - a) * batch / (tb - ta) if b > a else None


def train_flops(model_dir, pairs: list[ScoredPair]) -> float:
    """Mean training FLOPs a pair: forward + backward = 3 x the unpadded forward of
    bench/rerank_speed.flops, truncated as training truncates."""
    return 3 * flops(model_dir, [(p.query, p.document) for p in pairs], 512, "longest_first") / len(pairs)


def large_variants() -> dict[str, dict]:
    """bge-reranker-v2-m3's shape (XLM-R-large, 568M): full fine-tuning and LoRA on one GPU, fixed steps."""
    fast = dict(preset="fast", max_length=512, show_progress=False, validation_fraction=0.05, epochs=0)
    return {
        "warm-up": dict(fast, max_steps=10, per_device_batch_size=16),
        "XLM-R-large full fine-tune (fast, batch 16)": dict(fast, max_steps=80, per_device_batch_size=16,
                                                           learning_rate=1e-5),
        "XLM-R-large full fine-tune (fast, batch 32, checkpointed layers)": dict(
            fast, max_steps=50, per_device_batch_size=32, gradient_checkpointing=True, learning_rate=1e-5),
        "XLM-R-large LoRA r=16 (fast, batch 16)": dict(fast, max_steps=80, per_device_batch_size=16, lora=True,
                                                       learning_rate=1e-4),
    }


def padding_stats(tokenizer, pairs: list[ScoredPair], batch: int) -> dict:
    """Share of padded tokens with random batches vs length-grouped ones (what grouping saves)."""
    import random

    enc = tokenizer([p.query for p in pairs], [p.document for p in pairs], truncation=True, max_length=512)
    lengths = [len(x) for x in enc["input_ids"]]
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)

    def waste(idx):
        batches = [idx[i : i + batch] for i in range(0, len(idx), batch)]
        padded = sum(max(lengths[j] for j in b) * len(b) for b in batches)
        return 1 - sum(lengths) / padded

    grouped = []
    for s in range(0, len(order), batch * 50):
        grouped += sorted(order[s : s + batch * 50], key=lambda j: -lengths[j])
    t = time.perf_counter()
    tokenizer([p.query for p in pairs[:2000]], [p.document for p in pairs[:2000]], truncation=True, max_length=512)
    tok_us = (time.perf_counter() - t) / 2000 * 1e6
    return {"mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
            "padding_random": waste(order), "padding_grouped": waste(grouped), "tokenise_us_per_pair": tok_us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--variants", default=None, help="semicolon-separated names (default: all)")
    ap.add_argument("--seed-steps", type=int, default=150)
    ap.add_argument("--limit", type=int, default=None, help="use only this many pairs (smoke runs)")
    ap.add_argument("--epochs", type=float, default=2.0, help="epochs of the fast variants (amortises start-up)")
    ap.add_argument("--shape", choices=["bongsoo", "xlmr-large", "e5-small"], default="bongsoo",
                    help="xlmr-large: bge-reranker-v2-m3's shape, random weights, --tokenizer's XLM-R vocabulary; "
                         "e5-small: the offline base (--e5 FILE, a cut from python -m rag_rerank.models.subset) on "
                         "KorQuAD-length pairs (--korquad FILE)")
    ap.add_argument("--e5", help="with --shape e5-small: the e5 weights file")
    ap.add_argument("--korquad", help="with --shape e5-small: a KorQuAD JSON file (default: DATA/korquad/...)")
    ap.add_argument("--tokenizer", help="with --shape xlmr-large: a model directory with an XLM-R tokenizer (e5)")
    ap.add_argument("--repeat", type=int, default=1, help="run the variant list this many times, interleaved; "
                    "the table shows the best pairs/s and the largest peak")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    korquad = Path(args.korquad or Path(args.data) / "korquad" / "KorQuAD_v1.0_dev_part.json")
    pairs = (korquad_pairs(korquad) if args.shape == "e5-small" else load_pairs(Path(args.data)))[: args.limit]
    texts = [p.query for p in pairs] + [p.document for p in pairs]
    if args.shape == "e5-small":
        from rag_rerank.models import materialize_file

        model_dir = materialize_file(args.e5, work / "e5")
    elif args.shape == "xlmr-large":
        from rerank_speed import xlmr_large_like

        model_dir = xlmr_large_like(work / "xlmr-large-shape", args.tokenizer)
    else:
        model_dir = tiny_albert_cross_encoder(work / "albert-bongsoo-shape", texts, vocab_size=32000, **BONGSOO_SHAPE)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    n_params = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(str(model_dir)).parameters())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'})"
    stats = padding_stats(tokenizer, pairs, 64)
    stats["train_flops_per_pair"] = train_flops(model_dir, pairs)
    print(f"device: {device}; model {n_params / 1e6:.1f}M params, vocab {len(tokenizer)}; {len(pairs)} pairs; {stats}")

    chosen = {"xlmr-large": large_variants, "e5-small": lambda: e5_variants(args.seed_steps, args.epochs)}.get(
        args.shape, lambda: variants(args.seed_steps, args.epochs))()
    names = args.variants.split(";") if args.variants else list(chosen)
    runs = []
    for name in ["warm-up"] * ("warm-up" not in names) + names * args.repeat:
        spec = dict(chosen[name])
        cfg = preset(spec.pop("preset"), base_model=str(model_dir), output_dir=str(work / "run"), **spec)
        shutil.rmtree(work / "run", ignore_errors=True)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        clock = StepClock()
        try:
            res = train(cfg, TrainingData(pairs=list(pairs)), callbacks=[clock])
        except Exception as exc:  # one variant failing (a kernel, a compiler) leaves the others' rows
            print(json.dumps({"variant": name, "error": repr(exc)[:800]}), flush=True)
            continue
        t = res.metrics["train"]
        batch = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
        row = {"variant": name, "pairs_per_s": t["pairs_per_second"], "peak_gib": t["peak_memory_bytes"] / 2**30,
               "steps": t["steps"], "seconds": t["seconds"], "precision": "bf16" if t["bf16"] else "fp16" if t["fp16"] else "fp32",
               "batch": batch, "steady_pairs_per_s": clock.pairs_per_s(batch), "notes": res.notes}
        print(json.dumps(row), flush=True)
        if name != "warm-up":
            runs.append(row)
    results = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        same = [r for r in runs if r["variant"] == name]
        speeds = sorted(r["pairs_per_s"] for r in same)
        steady = sorted(r["steady_pairs_per_s"] or 0 for r in same)
        results.append(dict(same[0], pairs_per_s=speeds[-1], all_pairs_per_s=speeds, steady_pairs_per_s=steady[-1],
                            peak_gib=max(r["peak_gib"] for r in same)))

    base = next((r["pairs_per_s"] for r in results if r["variant"] == "seed"), None)
    shape = {"xlmr-large": "bge-reranker-v2-m3 shape (XLM-R-large)", "e5-small": "multilingual-e5-small cross-encoder"
             }.get(args.shape, "bongsoo ALBERT shape")
    lines = [f"Device: {device}. Best of {args.repeat} interleaved run(s) per variant. Model: {shape}, {n_params / 1e6:.1f}M params, max_length 512. "
             f"Data: {len(pairs)} Korean pairs, {stats['mean_tokens']:.0f} tokens on average "
             f"(max {stats['max_tokens']}).", "",
             "| variant | effective batch | precision | pairs/s (whole run) | x seed | pairs/s after step 10 | "
             "of FLOP limit (after step 10) | peak GPU memory (GiB) | steps |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['pairs_per_s'] / base:.1f}x" if base else "-"
        r["flop_fraction"] = (r["steady_pairs_per_s"] * stats["train_flops_per_pair"] / PEAK_FLOPS
                              if torch.cuda.is_available() and r["steady_pairs_per_s"] else None)
        share = f"{100 * r['flop_fraction']:.1f} %" if r["flop_fraction"] else "-"
        lines.append(f"| {r['variant']} | {r['batch']} | {r['precision']} | {r['pairs_per_s']:.0f} | {ratio} | "
                     f"{r['steady_pairs_per_s']:.0f} | {share} | {r['peak_gib']:.2f} | {r['steps']} |")
    lines += ["", f"Padding with batches of 64: random order {stats['padding_random']:.0%} of tokens are padding, "
                  f"length-grouped {stats['padding_grouped']:.0%}. Tokenising one pair takes "
                  f"{stats['tokenise_us_per_pair']:.0f} us on one CPU core."]
    table = "\n".join(lines)
    print(table)
    (out / "results.json").write_text(json.dumps({"device": device, "stats": stats, "results": results,
                                                  "runs": runs}, indent=2))
    (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
