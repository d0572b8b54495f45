"""What a training run leaves behind besides the model: report.md, plots, model card."""
from __future__ import annotations

import json
from pathlib import Path

from ..evaluate import EvalRow, format_table


_METRIC_NAMES = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "map": "MAP"}


def plot_history(history: list[dict], out: Path, measures: str | None = None) -> list[str]:
    """loss.png (train and eval loss per step) and eval.png (ranking metrics per step, named as the
    report's table names them, titled with what they measure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "eval_loss" in h and "step" in h]
    if train or evals:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if train:
            ax.plot(*zip(*train), label="train loss")
        if evals:
            ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
        written.append("loss.png")
    keys = sorted({k for h in evals for k in h if k.startswith("eval_val_")})
    if keys:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            name = k.removeprefix("eval_val_")
            ax.plot([h["step"] for h in evals], [h.get(k) for h in evals], "o-", label=_METRIC_NAMES.get(name, name))
        ax.set_xlabel("step")
        ax.set_ylabel("validation")
        if measures:
            ax.set_title(f"validation during training: {measures}", fontsize=7)
        ax.set_ylim(0, 1)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "eval.png", dpi=110)
        plt.close(fig)
        written.append("eval.png")
    return written


def write_report(out: Path, metrics: dict, rows: list[EvalRow], title: str) -> None:
    plots = plot_history(metrics.get("history", []), out, metrics.get("validation_during_training"))
    t = metrics["train"]
    cfg = metrics["config"]
    lines = [f"# {title}", "",
             f"Base model `{cfg['base_model']}`, preset `{cfg['preset']}`, loss `{cfg['loss']}`, "
             f"{t['steps']} steps on {t['pairs']} training rows, {t['seconds']:.1f}s on {t['device']} "
             f"({'bf16' if t['bf16'] else 'fp16' if t['fp16'] else 'fp32'}); "
             f"peak memory {t['peak_memory_bytes'] / 2**30:.2f} GiB ({t['peak_memory_source']}).", ""]
    if rows:
        lines += [format_table(rows, "Validation part, before and after training"), ""]
    if metrics.get("notes"):
        lines += ["Notes:", *[f"- {n}" for n in metrics["notes"]], ""]
    if "eval.png" in plots and metrics.get("validation_during_training"):
        lines += [f"eval.png: the validation metrics logged during training, {metrics['validation_during_training']}.", ""]
    lines += [f"![{p}]({p})" for p in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def append_model_card(out: Path, metrics: dict, rows: list[EvalRow], data_description: str) -> None:
    """The model's README.md, the project's own (it replaces sentence-transformers' stock card, which named
    the base model "Unknown" and pasted rows of the training data in): base model, data (described, never
    quoted), recipe, validation metrics, the saved pipeline settings, how to load it, what to check."""
    from ..models import settings as model_settings

    cfg = metrics["config"]
    base = cfg["base_model"]
    hub_base = "/" in base and not Path(base).exists()
    knobs = {k: cfg[k] for k in ("preset", "loss", "epochs", "max_steps", "learning_rate", "per_device_batch_size",
                                 "gradient_accumulation_steps", "max_length", "lora", "freeze", "seed")}
    settings = model_settings.load(out)
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: text-ranking", "tags:", "- cross-encoder",
             "- reranker", "- rag-rerank", "language:", "- ko"] + ([f"base_model: {base}"] if hub_base else []) + ["---"]
    t = metrics["train"]
    lines = front + ["", f"# {out.name}", "",
                     "A Korean cross-encoder reranker fine-tuned with `rag-rerank train`.", "",
                     "## Base model", "",
                     f"`{base}`" + ("" if hub_base else f" (a local model: {metrics.get('base_path', base)})") + ".", "",
                     "## Training data", "",
                     f"{data_description}. No rows of it are copied here. The licence of the data applies to this "
                     "model's use: state it here before sharing the model.", "",
                     "## Recipe", "", f"{t['steps']} optimizer steps on {t['pairs']} training rows, {t['seconds']:.0f} s "
                     f"on {t['device']}.", "", "```json", json.dumps(knobs, indent=2, ensure_ascii=False), "```", ""]
    if rows:
        lines += [format_table(rows, "Validation (held out of training; see report.md for how it was carved)"), ""]
    saved = []
    if settings.hybrid is not None:
        saved.append(f"hybrid first stage: BM25 share {settings.hybrid.weight:g} (k={settings.hybrid.rrf_k:g})")
    if settings.fusion is not None:
        saved.append("fusion with the first stage: " + ("plain reranking" if settings.fusion.is_plain
                                                        else settings.fusion.describe()))
    if settings.known_queries is not None and not settings.known_queries.is_off:
        saved.append(f"known queries: {settings.known_queries.describe()}")
    if saved:
        lines += ["## Pipeline settings (`rag_rerank.json`, chosen on the validation part)", "",
                  *[f"- {x}" for x in saved], ""]
    lines += ["## Use", "", "```python", "from rag_rerank import Reranker, TwoStageRetriever",
              f'reranker = Reranker("{out.name}")                  # scores in [0, 1]',
              "retriever = TwoStageRetriever(store, reranker)     # applies the settings above", "```", "",
              "`sentence_transformers.CrossEncoder(path)` loads it too (without the pipeline settings).", "",
              "## Limits", "",
              "Validation numbers are on data split from the training data; measure on your own held-out "
              "queries (`rag-rerank eval`) before relying on them.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
