"""Training recipes: one dataclass of knobs, named presets, config files.

The field defaults of :class:`TrainConfig` are the default retrieval recipe (see there).
``seed`` reproduces the original fine-tuning recipe exactly (batch 4 x accumulation 4,
warmup 50, weight decay 0.01, eval/save every 50 steps, best model by eval loss, fp16,
logging every 5 steps) with today's transformers argument names. ``fast`` is the
throughput-oriented choice: batch 256 (about 20 GiB on ALBERT-small; lower it on small GPUs),
bf16, fused GELU, length-grouped batches tokenised in the loader workers, BCE over mined hard
negatives, best model by NDCG@10. Numbers: BENCHMARKS.md.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BASE = "bongsoo/albert-small-kor-cross-encoder-v1"


@dataclass
class TrainConfig:
    """Every training knob. The field defaults are the default retrieval recipe (what
    ``rag-rerank train`` runs with no preset): BCE over hard negatives mined from the
    first stage the pipeline uses, model chosen by NDCG@10 of reranking that first
    stage's candidates on a validation split, early stopping, fusion with the
    first-stage rank tuned on the same split, and the training queries kept with the
    model (their documents fused in when that gains on the split). Presets override these."""

    base_model: str = DEFAULT_BASE
    output_dir: str = "runs/reranker"
    preset: str = "default"
    # optimisation
    loss: str = "bce"  # bce | listwise | mnrl
    epochs: float | None = None  # None: 3, or more on small data to reach min_steps; a number is kept as given
    max_steps: int = -1
    # small data with epochs unset: at least this many optimizer steps (early stopping still ends
    # training when validation stops improving). A few thousand queries give ~600 steps an epoch
    # and were still improving on validation after 3 epochs (KorNLI: bench/results/quality_h200_s4/kornli_3epochs).
    min_steps: int = 3000
    learning_rate: float = 3e-5
    per_device_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.1  # an int is steps, a float in [0, 1) a fraction of all steps
    weight_decay: float = 0.01
    mixed_precision: str = "auto"  # fp16 | bf16 | fp32 | auto (bf16 where the GPU has it, else fp16; fp32 on CPU)
    optim: str = "auto"  # any transformers optimizer name; "auto": fused AdamW on CUDA
    max_length: int = 512
    seed: int = 42
    # evaluation and checkpoints (a float in (0, 1) is a fraction of all training steps)
    eval_steps: float = 0.1
    save_steps: float = 0.1
    logging_steps: float = 0.01
    metric_for_best_model: str = "ndcg@10"  # or "mrr@10", "eval_loss"
    load_best_model_at_end: bool = True
    early_stopping_patience: int | None = 3
    validation_fraction: float = 0.1
    validation_min_queries: int = 200  # small data: at least this many (up to a quarter of the queries)
    save_total_limit: int | None = 2
    keep_checkpoints: bool = False  # checkpoints serve --resume of an interrupted run; a finished run drops them
    tune_fusion: bool = True  # choose fusion with the first-stage rank on validation, save it with the model
    tune_hybrid: bool = True  # choose BM25's share in a hybrid first stage on validation (before mining), save it
    known_queries: bool = True  # keep the training queries with the model; fused in where validation gains
    # data pipeline
    group_by_length: bool = True
    pretokenize: bool = True  # tokenise in the loader workers instead of inside the loss
    # batches as one packed row of real tokens (no padding; train/packing.py). None: where the flash kernel
    # runs (CUDA, bf16/fp16); true: also elsewhere (a per-pair attention loop); false: padded. Needs
    # pretokenize and loss bce
    pack: bool | None = None
    dataloader_workers: int = 2
    # None: chosen from the first stage's validation MRR@10 (mining.default_mix: 7 hard + 1 random
    # where it is >= 0.85, as on KorQuAD passages; 1 + 7 below, as on KorNLI and the chatbot data).
    num_hard_negatives: int | None = None
    num_random_negatives: int | None = None
    skip_top_negatives: int = 0  # ignore the first stage's top N when mining (fewer false negatives)
    mine_mode: str = "hybrid"
    # extra data (other tasks' mined groups / scored pairs, rag-rerank train --extra-data) is sampled down
    # to at most this share of the training rows: validation, the hybrid and the fusion are all chosen on
    # the primary task, so it keeps at least half of the steps
    extra_data_share: float = 0.5
    candidate_k: int = 30
    # memory techniques
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None  # None: ALBERT query/key/value/dense, BERT/XLM-R: PEFT defaults
    merge_lora: bool = True
    freeze: list[str] = field(default_factory=list)  # embeddings | encoder | pooler | classifier
    freeze_bottom_layers: int = 0  # BERT-like models only: ALBERT shares one layer
    gradient_checkpointing: bool = False
    fused_gelu: bool = True  # run gelu_new as PyTorch's fused tanh GELU (same function, less memory)
    # reporting
    show_progress: bool = True
    memory_report: bool = False
    push_to_hub: str | None = None

    def __post_init__(self) -> None:
        """Every option checked as it enters (flags, --set, config files, Python): a kind from the field's
        type, and the ranges an option has, each error naming the option."""
        import math

        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and "None" in kind:
                continue
            if kind.startswith("int"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"training option {f.name} must be an integer, got {value!r}")
            elif kind.startswith("float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"training option {f.name} must be a finite number, got {value!r}")
            elif kind.startswith("bool") and not isinstance(value, bool):
                raise ValueError(f"training option {f.name} must be true or false, got {value!r}")
            elif kind.startswith("str") and not isinstance(value, str):
                raise ValueError(f"training option {f.name} must be a string, got {value!r}")
        positive = ("learning_rate", "per_device_batch_size", "gradient_accumulation_steps", "max_length",
                    "candidate_k", "lora_r")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"training option {name} must be > 0, got {getattr(self, name)!r}")
        if self.epochs is not None and (self.epochs < 0 or self.epochs == 0 and self.max_steps <= 0):
            raise ValueError(f"training option epochs must be > 0 (0 only with max_steps set), got {self.epochs!r}: "
                             "no training would run, and the base model would be saved as fine-tuned")
        for name in ("warmup_steps", "weight_decay", "skip_top_negatives", "freeze_bottom_layers", "dataloader_workers",
                     "validation_min_queries", "lora_dropout", "min_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"training option {name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_steps < -1 or self.max_steps == 0:
            raise ValueError(f"training option max_steps must be -1 (no cap) or > 0, got {self.max_steps}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"training option validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0 < self.extra_data_share < 1:
            raise ValueError(f"training option extra_data_share must be in (0, 1), got {self.extra_data_share}")
        # the rest failed late - after the model loaded and data was mined, some after training steps - with a
        # dependency's traceback (an unknown metric at the first evaluation, a dropout of 1.5 inside PEFT)
        choices = {"loss": ("bce", "listwise", "mnrl"),
                   "mixed_precision": ("auto", "fp16", "bf16", "fp32", "no", "none"),
                   "metric_for_best_model": ("ndcg@10", "mrr@10", "map", "eval_loss")}
        for name, allowed in choices.items():
            if getattr(self, name).lower() not in allowed:
                raise ValueError(f"training option {name} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("eval_steps", "save_steps", "logging_steps"):
            value = getattr(self, name)
            if value <= 0 or value >= 1 and value != int(value):
                raise ValueError(f"training option {name} must be a fraction of the steps in (0, 1) or a whole "
                                 f"number of steps, got {value!r}")
        if self.max_length < 8:
            raise ValueError(f"training option max_length must be >= 8 (a query and a document beside the special "
                             f"tokens), got {self.max_length}")
        if not 0 <= self.lora_dropout < 1 or self.lora_alpha <= 0 or self.seed < 0:
            raise ValueError(f"training options lora_dropout must be in [0, 1), lora_alpha > 0 and seed >= 0; got "
                             f"{self.lora_dropout!r}, {self.lora_alpha!r}, {self.seed!r}")
        for name in ("num_hard_negatives", "num_random_negatives", "early_stopping_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"training option {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("base_model", "output_dir"):
            if not getattr(self, name).strip():
                raise ValueError(f"training option {name} is empty")
        # lists: one string was read as its characters (--set freeze=embeddings, a YAML scalar) and a misspelt
        # group failed only after the model loaded; a string is its comma-separated items now, as --freeze reads
        for name in ("freeze", "lora_targets"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [x.strip() for x in getattr(self, name).split(",") if x.strip()])
        groups = ("embeddings", "encoder", "pooler", "classifier")
        if not isinstance(self.freeze, (list, tuple)) or not all(
                isinstance(g, str) and (g in groups or re.fullmatch(r"layer\.\d+", g)) for g in self.freeze):
            raise ValueError(f"training option freeze must be parameter groups ({', '.join(groups)} or layer.N), got "
                             f"{self.freeze!r}")
        if self.lora_targets is not None and (not isinstance(self.lora_targets, (list, tuple)) or not self.lora_targets
                                              or not all(isinstance(t, str) and t for t in self.lora_targets)):
            raise ValueError(f"training option lora_targets must be a non-empty list of module names, got "
                             f"{self.lora_targets!r}")

    def replace(self, **overrides: Any) -> "TrainConfig":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(preset="seed", per_device_batch_size=4, gradient_accumulation_steps=4, warmup_steps=50,
                 weight_decay=0.01, eval_steps=50, save_steps=50, logging_steps=5, mixed_precision="fp16",
                 metric_for_best_model="eval_loss", load_best_model_at_end=True, learning_rate=2e-5,
                 group_by_length=False, pretokenize=False, dataloader_workers=0, loss="bce", epochs=1.0,
                 optim="adamw_torch", fused_gelu=False, early_stopping_patience=None, num_hard_negatives=4,
                 num_random_negatives=1, pack=False,
                 validation_min_queries=0, tune_fusion=False, tune_hybrid=False,
                 known_queries=False),
    "fast": dict(preset="fast", per_device_batch_size=256, gradient_accumulation_steps=1, warmup_steps=0.1, weight_decay=0.01, eval_steps=500, save_steps=500, logging_steps=50,
                 mixed_precision="bf16", metric_for_best_model="ndcg@10", load_best_model_at_end=True,
                 learning_rate=1e-4, group_by_length=True, pretokenize=True, dataloader_workers=4, loss="bce",
                 fused_gelu=True, optim="auto", epochs=1.0, early_stopping_patience=None),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig().replace(**PRESETS[name]).replace(**overrides)


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A YAML, TOML or JSON file of TrainConfig fields; ``preset: NAME`` starts from that preset."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Notepad) is not part of the text
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib

        values = tomllib.loads(text)
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"{path}: config must be .yaml, .toml or .json")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of options")
    base = values.pop("preset", None)
    config = preset(base) if base else TrainConfig()
    return config.replace(**values).replace(**overrides)
