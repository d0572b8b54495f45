"""What a training run leaves behind besides the model: report.md, plots, model card."""
from __future__ import annotations

import json
from pathlib import Path

from ..evaluate import EvalRow, format_table


def plot_history(history: list[dict], out: Path) -> list[str]:
    """loss.png (train and eval loss per step) and eval.png (ranking metrics per step)."""
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
            ax.plot([h["step"] for h in evals], [h.get(k) for h in evals], "o-", label=k.removeprefix("eval_val_"))
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "eval.png", dpi=110)
        plt.close(fig)
        written.append("eval.png")
    return written


def write_report(out: Path, metrics: dict, rows: list[EvalRow], title: str) -> None:
    plots = plot_history(metrics.get("history", []), out)
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
    lines += [f"![{p}]({p})" for p in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def append_model_card(out: Path, metrics: dict, rows: list[EvalRow], data_description: str) -> None:
    card = out / "README.md"
    existing = card.read_text(encoding="utf-8") if card.exists() else ""
    cfg = metrics["config"]
    knobs = {k: cfg[k] for k in ("preset", "loss", "epochs", "max_steps", "learning_rate", "per_device_batch_size",
                                 "gradient_accumulation_steps", "max_length", "lora", "freeze", "seed")}
    section = ["", "## rag-rerank training", "", f"Data: {data_description}", "",
               "Recipe:", "```json", json.dumps(knobs, indent=2, ensure_ascii=False), "```", ""]
    if rows:
        section += [format_table(rows, "Validation metrics"), ""]
    section += ["Load it with `rag_rerank.Reranker(path)` or `sentence_transformers.CrossEncoder(path)`.", ""]
    card.write_text(existing + "\n".join(section), encoding="utf-8")
