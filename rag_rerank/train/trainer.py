"""`train()`: data -> (mined negatives) -> CrossEncoderTrainer -> model directory + report."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .. import models
from ..models.devices import resolve_device
from .. import evaluate
from . import memory, model_setup, packing, report
from ..reranker.engine.packed import position_offset
from .data import TrainingData, merge_queries, mix_in
from .fast import PairTokenizingCollator, RerankerTrainer, length_grouped_sampler
from .mining import choose_mix, mine_hard_negatives
from ..models.settings import ModelSettings
from .recipes import TrainConfig

log = logging.getLogger("rag_rerank.train")
_RANKING_METRICS = {"ndcg@10", "mrr@10", "map"}


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    notes: list[str] = field(default_factory=list)


def _say(notes: list[str], message: str) -> None:
    """A note for the report, logged once (``rag_rerank.train`` at INFO; the CLI shows them on stderr)."""
    notes.append(message)
    log.info(message)


OFFLINE_BASE = "intfloat/multilingual-e5-small"  # materialised from pip weights when the hub is unreachable


def resolve_base(config: TrainConfig, notes: list[str]) -> tuple[TrainConfig, Path]:
    """The base model to fine-tune and its local directory: as asked, or - for the default base
    only - the offline multilingual-e5-small when the hub cannot deliver bongsoo's weights (said
    aloud). Each name is resolved once (a resolution may try the hub)."""
    from .recipes import DEFAULT_BASE

    try:
        # no stand-in: the shipped reranker replaces the default for scoring, not as a training base
        return config, models.resolve(config.base_model, substitute=False)
    except models.ModelNotFoundError as exc:
        if config.base_model != DEFAULT_BASE:
            raise
        _say(notes, f"base {DEFAULT_BASE} is not reachable ({str(exc)[:120]}...); fine-tuning the offline "
                    f"{OFFLINE_BASE} instead (its classification head starts untrained)")
        return config.replace(base_model=OFFLINE_BASE), models.resolve(OFFLINE_BASE, substitute=False)


def build_model(config: TrainConfig, path: Path, device: torch.device, notes: list[str]):
    """``config.base_model``, resolved to ``path``, as a CrossEncoder set up for ``config``'s training."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(path), num_labels=1, max_length=config.max_length, device=str(device))
    inner = ce[0].model
    if config.freeze or config.freeze_bottom_layers:
        frozen = model_setup.apply_freezing(inner, list(config.freeze), config.freeze_bottom_layers)
        _say(notes, f"froze {len(frozen)} parameter tensors ({', '.join(config.freeze) or 'none'}"
                    f"{f', bottom {config.freeze_bottom_layers} layers' if config.freeze_bottom_layers else ''})")
    if config.fused_gelu:
        model_setup.fuse_gelu(inner)
    if config.gradient_checkpointing:
        _say(notes, f"gradient checkpointing: {model_setup.enable_gradient_checkpointing(inner)}")
    if config.lora:
        ce[0].model = model_setup.apply_lora(inner, config.lora_r, config.lora_alpha, config.lora_dropout,
                                             config.lora_targets)
    return ce


def _datasets(config: TrainConfig, data: TrainingData):
    from datasets import Dataset

    if config.loss == "bce":
        rows = data.scored_pairs()
        return Dataset.from_dict({"query": [r.query for r in rows], "document": [r.document for r in rows],
                                  "label": [r.label for r in rows]})
    groups = [g for g in data.groups if g.negatives]
    if not groups:
        raise ValueError(f"loss {config.loss!r} needs groups with negatives (mine them or give negatives)")
    # one row a positive, each beside the query's negatives (a group's later positives were dropped)
    rows = [(g, p) for g in groups for p in g.positives]
    if config.loss == "listwise":
        return Dataset.from_dict({"query": [g.query for g, _ in rows],
                                  "docs": [[p] + g.negatives for g, p in rows],
                                  "labels": [[1] + [0] * len(g.negatives) for g, _ in rows]})
    if config.loss == "mnrl":
        n = min(len(g.negatives) for g in groups)
        cols = {"query": [g.query for g, _ in rows], "positive": [p for _, p in rows]}
        for j in range(n):
            cols[f"negative_{j + 1}"] = [g.negatives[j] for g, _ in rows]
        return Dataset.from_dict(cols)
    raise ValueError(f"unknown loss {config.loss!r}; use bce, listwise or mnrl")


def _loss(config: TrainConfig, ce, dataset):
    from sentence_transformers.cross_encoder import losses

    if config.loss == "bce":
        return losses.BinaryCrossEntropyLoss(ce)
    if config.loss == "listwise":
        return losses.ListNetLoss(ce)
    return losses.MultipleNegativesRankingLoss(ce, num_negatives=len(dataset.column_names) - 2)


DEFAULT_EPOCHS = 3.0


def _resolve_epochs(config: TrainConfig, rows: int, notes: list[str]) -> TrainConfig:
    """Epochs left unset: 3, or as many as small data needs to run ``min_steps`` optimizer steps."""
    if config.epochs is not None:
        return config
    per_step = config.per_device_batch_size * config.gradient_accumulation_steps * _world_size()
    steps_per_epoch = max(1, math.ceil(rows / per_step))
    if config.max_steps > 0 or not config.min_steps or DEFAULT_EPOCHS * steps_per_epoch >= config.min_steps:
        return config.replace(epochs=DEFAULT_EPOCHS)
    epochs = math.ceil(10 * config.min_steps / steps_per_epoch) / 10
    _say(notes, f"small data ({steps_per_epoch} steps an epoch): {epochs:g} epochs instead of {DEFAULT_EPOCHS:g} "
                f"to reach min_steps={config.min_steps} (early stopping still applies)")
    return config.replace(epochs=epochs)


def _world_size() -> int:
    """Processes in this run: torchrun / accelerate set WORLD_SIZE; 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _eval_batch(config: TrainConfig, eval_rows: int | None) -> int:
    batch = max(config.per_device_batch_size, 16)
    world = _world_size()
    if eval_rows and world > 1:
        # under DDP sentence-transformers drops each rank's last incomplete eval batch too: a small
        # validation part would give no eval_loss at all, so keep one whole batch per rank
        batch = max(1, min(batch, eval_rows // world))
    return batch


def _args(config: TrainConfig, fp16: bool, bf16: bool, has_eval: bool, device: torch.device | None = None,
          eval_rows: int | None = None):
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    metric = config.metric_for_best_model
    ranking = metric.lower() in _RANKING_METRICS
    kwargs = dict(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=_eval_batch(config, eval_rows),
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, fp16=fp16, bf16=bf16,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, seed=config.seed, data_seed=config.seed,
        dataloader_num_workers=config.dataloader_workers, disable_tqdm=not config.show_progress,
        report_to="none", eval_strategy="steps" if has_eval else "no", eval_steps=config.eval_steps,
        load_best_model_at_end=config.load_best_model_at_end and has_eval,
        metric_for_best_model=(f"eval_val_{metric.lower()}" if ranking else metric) if has_eval else None,
        greater_is_better=ranking if has_eval else None,
        # one fused kernel for the whole AdamW update: small models are launch-bound
        optim=(("adamw_torch_fused" if device is not None and device.type == "cuda" else "adamw_torch")
               if config.optim == "auto" else config.optim),
    )
    if device is not None and device.type == "cpu":
        # the Trainer would otherwise pick a GPU if one exists, and under torchrun on CPU it
        # would not start DDP at all (each rank trained alone, all writing one directory)
        kwargs["use_cpu"] = True
    if config.group_by_length:
        kwargs["batch_sampler"] = length_grouped_sampler
    if config.push_to_hub:
        kwargs.update(push_to_hub=True, hub_model_id=config.push_to_hub)
    args = CrossEncoderTrainingArguments(**kwargs)
    if device is not None and device.type == "cuda" and _world_size() == 1:
        pin_single_device(args, device)
    return args


def pin_single_device(args, device: torch.device) -> None:
    """One process trains on the one GPU it resolved. Left alone, the Trainer wraps the model in
    DataParallel over every visible GPU (sentence-transformers' losses then fail asking the wrapper
    for ``.device``, and the seed recipe's small batches get slower) and places it on cuda:0."""
    if device.index is None:  # a bare "cuda": the current one
        device = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    args._n_gpu = 1
    args.__dict__["_setup_devices"] = device  # the Trainer's cached device (a cached_property)
    if torch.cuda.is_available():
        torch.cuda.set_device(device)


def train(config: TrainConfig, train_data: TrainingData, eval_data: TrainingData | None = None, *,
          first_stage=None, corpus=None, resume: bool = False, device: str | None = None,
          data_description: str | None = None,
          extra_data: Sequence[tuple[str, TrainingData]] = (), callbacks: Sequence = ()) -> TrainResult:
    """Fine-tune a cross-encoder. See :class:`~rag_rerank.train.recipes.TrainConfig` for every knob.

    ``first_stage`` (a TwoStageRetriever or InMemoryCorpus) mines hard negatives for the train and
    validation groups and gives the validation candidates for the before/after table.
    ``extra_data``: ``(name, data)`` of other tasks, already mined, mixed into training only
    (:func:`~rag_rerank.train.data.mix_in`); validation, the hybrid, the fusion and the known
    queries stay the primary task's. ``callbacks``: transformers ``TrainerCallback`` objects, added to the
    trainer's own.
    """
    from transformers import EarlyStoppingCallback

    if config.lora_targets is not None and not config.lora:  # checked here, where the options are final
        raise ValueError("training option lora_targets needs lora=true (--lora); without it every weight trains "
                         "and the targets would be ignored")
    train_data.check("train_data")  # data built in Python: files were checked as they were read
    if eval_data is not None and len(eval_data):
        eval_data.check("eval_data")
    for name, extra in extra_data:
        extra.check(f"extra_data {name!r}")
    # a query named by several groups is one query (as files are read): validation counts it once, and mining
    # keeps its other positives out of its negatives
    train_data = TrainingData(merge_queries(train_data.groups), list(train_data.pairs))
    if eval_data is not None:
        eval_data = TrainingData(merge_queries(eval_data.groups), list(eval_data.pairs))
    notes: list[str] = []
    out = Path(config.output_dir)
    _check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    fp16, bf16, note = model_setup.resolve_precision(config.mixed_precision, dev)
    if note:
        _say(notes, note)
    if config.dataloader_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(config.seed)

    config, base_path = resolve_base(config, notes)
    if eval_data is None and config.validation_fraction > 0:
        topics = train_data.topics()
        train_data, eval_data = train_data.split(config.validation_fraction, seed=config.seed,
                                                 min_queries=config.validation_min_queries)
        held = eval_data.topics()
        _say(notes, f"validation: {len(eval_data.groups) + len(eval_data.pairs)} rows carved off, "
                    + (f"whole topics held out ({len(held)} of {len(topics)})" if topics else
                       "whole documents held out (rows carry no 'topic' field: give one - an article, a "
                       "source - and validation holds whole topics out, as new documents will be)"))
    if eval_data is not None:  # a carved part shares nothing with the rest, but --extra-data may hold it
        trained = TrainingData([g for _, x in extra_data for g in x.groups] + train_data.groups,
                               [p for _, x in extra_data for p in x.pairs] + train_data.pairs)
        overlap = _overlap(trained, eval_data)
        if overlap:
            _say(notes, overlap)
    if first_stage is not None:
        for name, part in (("the training data", train_data), ("the validation data", eval_data)):
            note = evaluate.positives_missing(first_stage, part.groups, name) if part is not None else None
            if note:  # mined candidates never hold their answer, and a variant of it may be mined as a negative
                _say(notes, f"warning: {note}. Positives are matched by their exact text: the corpus should hold "
                            "the same texts as the data, or mining and validation work on candidates without them")
    hybrid, hybrid_tuning = None, None
    if config.tune_hybrid and first_stage is not None and eval_data is not None and eval_data.groups:
        first_stage, hybrid, hybrid_tuning = _tune_hybrid(config, first_stage, eval_data, notes)
    if first_stage is not None:
        config = config.replace(mine_mode=first_stage.mode)
        config = _negative_mix(config, first_stage, eval_data if eval_data is not None and eval_data.groups
                               else train_data, notes)
        mine = dict(corpus=corpus, num_hard=config.num_hard_negatives, num_random=config.num_random_negatives,
                    candidate_k=config.candidate_k, skip_top=config.skip_top_negatives, seed=config.seed)
        train_data = mine_hard_negatives(train_data, first_stage, **mine)
        if eval_data is not None:
            eval_data = mine_hard_negatives(eval_data, first_stage, **mine)

    primary_train = train_data  # the known queries are this task's, never the extra tasks'
    if extra_data:
        if config.loss != "bce" and any(data.pairs for _, data in extra_data):
            raise ValueError(f"loss {config.loss!r} ranks groups and would drop the scored pairs of "
                             f"{next(name for name, data in extra_data if data.pairs)}; use loss bce")
        train_data, taken = mix_in(train_data, extra_data, config.extra_data_share, config.seed)
        _say(notes, f"extra training data (at most {config.extra_data_share:g} of the rows): {'; '.join(taken)}")

    ce = build_model(config, base_path, dev, notes)
    train_ds = _datasets(config, train_data)
    if not len(train_ds):
        raise ValueError("no training rows: every query was carved into validation or had nothing to learn from "
                         "(give more data, or --eval-data so none is carved)")
    eval_ds = _datasets(config, eval_data) if eval_data is not None and len(eval_data) else None
    evaluator = _evaluator(config, eval_data) if eval_ds is not None else None
    if eval_ds is not None and config.metric_for_best_model.lower() in _RANKING_METRICS and evaluator is None:
        _say(notes, f"validation data has no negatives to rank, so the best model is chosen by eval_loss, "
                    f"not {config.metric_for_best_model} (give a first stage to mine them)")
        config = config.replace(metric_for_best_model="eval_loss")

    if _world_size() > 1 and config.metric_for_best_model.lower() in _RANKING_METRICS:
        # sentence-transformers' evaluators report on rank 0 only; every rank must see the metric.
        _say(notes, "distributed run: the best model is chosen by eval_loss (the reranking evaluator "
                    "still runs and is logged on rank 0)")
        config = config.replace(metric_for_best_model="eval_loss")
    if config.lora and config.load_best_model_at_end and eval_ds is not None:
        # Trainer reloads the best checkpoint into the CrossEncoder's plain state dict, which
        # fails for a PEFT-wrapped model (seen on GPU): keep the last weights instead, and say so.
        _say(notes, "LoRA: keeping the final weights (best-checkpoint reloading does not support PEFT models)")
        config = config.replace(load_best_model_at_end=False)
    config = _resolve_epochs(config, len(train_ds), notes)
    args = _args(config, fp16, bf16, eval_ds is not None, device=dev, eval_rows=len(eval_ds) if eval_ds else None)
    collator, switched = _collator(config, ce, dev, fp16 or bf16, notes)
    callbacks = ([EarlyStoppingCallback(config.early_stopping_patience)]
                 if config.early_stopping_patience and eval_ds is not None else []) + list(callbacks)
    trainer = RerankerTrainer(model=ce, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                              loss=_loss(config, ce, train_ds), evaluator=evaluator, callbacks=callbacks,
                              **({"data_collator": collator} if collator else {}))
    memory.reset_peak(dev)
    start = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=True if resume else None)
    finally:
        if switched is not None:
            switched.restore()  # an ordinary model again, before it is saved or evaluated
    seconds = time.perf_counter() - start
    peak = memory.measured_peak(dev)
    if not trainer.is_world_process_zero():  # under torchrun / accelerate, rank 0 writes the outputs
        return TrainResult(out, {"train": {"steps": result.global_step}}, notes)

    _save(ce, config, out, notes)
    _drop_checkpoints(config, out, notes)
    metrics = {
        "train": {"seconds": seconds, "steps": result.global_step, "loss": result.training_loss,
                  "pairs": len(train_ds), "pairs_per_second": result.metrics.get("train_samples_per_second"),
                  "peak_memory_bytes": peak[0], "peak_memory_source": peak[1],
                  "device": str(dev), "fp16": fp16, "bf16": bf16},
        "config": config.to_dict(),
        "history": trainer.state.log_history,
        "validation_during_training": _evaluator_kind(eval_data) if evaluator is not None else None,
        "base_path": str(base_path),
        "notes": notes,
    }
    if config.memory_report:
        est = memory.estimate(ce.model, batch_size=config.per_device_batch_size, seq_len=config.max_length,
                              mixed_precision=fp16 or bf16)
        metrics["memory"] = {"estimate": est, "peak": peak[0]}
        print(memory.format_report(est, peak))
    rows, tuning = (before_after(config, eval_data, out, notes, primary_train, first_stage, hybrid)
                    if eval_data is not None and eval_data.groups else ([], None))
    metrics["validation"] = {r.name: r.metrics for r in rows}
    if tuning:
        metrics.update(tuning)
    if hybrid_tuning:
        metrics["hybrid"] = hybrid_tuning
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    report.write_report(out, metrics, rows, f"Training report: {out.name}")
    report.append_model_card(out, metrics, rows, data_description or f"{len(train_ds)} training rows")
    return TrainResult(out, metrics, notes)


def _collator(config: TrainConfig, ce, device: torch.device, half: bool, notes: list[str]):
    """The loader's batch builder - packed rows, padded tensors, or None (sentence-transformers tokenises
    in the loss) - and the packing switch to undo after training (or None)."""
    if not (config.pretokenize and config.loss == "bce"):
        if config.pack:
            _say(notes, f"pack true needs pretokenize and loss bce (here: pretokenize {config.pretokenize}, loss "
                        f"{config.loss}): padded batches")
        return None, None
    pack, why = packing.packs(config.pack, ce[0].model, device, half)
    _say(notes, why)
    if not pack:
        return PairTokenizingCollator(ce.tokenizer, config.max_length), None
    switched = packing.enable(ce)
    return packing.PairPackingCollator(ce.tokenizer, config.max_length, position_offset(switched.hf.config)), switched


def _negative_mix(config: TrainConfig, first_stage, data: TrainingData, notes: list[str]) -> TrainConfig:
    """Negatives per query the recipe leaves open (None), from the first stage's score on ``data``
    (validation when there is one): :func:`~rag_rerank.train.mining.default_mix`."""
    hard, rand, why = choose_mix(first_stage, data.groups, config.candidate_k,
                                 config.num_hard_negatives, config.num_random_negatives)
    if why != "as given":
        _say(notes, f"negatives per query: {why}")
    return config.replace(num_hard_negatives=hard, num_random_negatives=rand)


def _overlap(train_data: TrainingData, eval_data: TrainingData) -> str | None:
    """A warning where validation repeats what the model trains on: its queries, or its relevant documents among
    training's. Its numbers then say how well the model recalls what it was shown, and the fusion and hybrid
    chosen on it trust the reranker more than new data will. A carved part shares neither with the rest
    (:meth:`~rag_rerank.train.data.TrainingData.split`), but validation given apart (``--eval-data``) may, and
    extra data (``--extra-data``) may hold either kind."""
    asked, answers = eval_data.queries(), set().union(*eval_data.relevant().values())
    seen_queries, seen_docs = asked & train_data.queries(), answers & set().union(*train_data.relevant().values())
    if not seen_queries and not seen_docs:
        return None
    return (f"warning: validation repeats training - {len(seen_queries)} of {len(asked)} validation queries are "
            f"training queries, {len(seen_docs)} of its {len(answers)} relevant "
            "documents are training positives; its numbers (and the fusion chosen on them) overstate what new "
            "data will see. Keep validation's queries and documents out of the training and extra data (or leave "
            "--eval-data out to carve validation)")


def _tune_hybrid(config: TrainConfig, first_stage, eval_data: TrainingData, notes: list[str]):
    """A hybrid first stage that searches both sides itself: BM25's share chosen on the validation
    queries before mining, so negatives, validation candidates and the saved model all use the
    tuned hybrid. Returns (first stage, the fusion or None, its report or None)."""
    from ..retrieval.first_stage import DenseAndLexical, tune_hybrid

    if first_stage.mode != "hybrid":
        return first_stage, None, None
    if not isinstance(first_stage, DenseAndLexical) or not first_stage.reweightable:
        _say(notes, "hybrid weights not tuned: the saved rankings hold the fused order only (rag-rerank mine "
                    "of this version keeps both sides)")
        return first_stage, None, None
    groups = eval_data.groups
    best, report = tune_hybrid(first_stage, [g.query for g in groups], [set(g.positives) for g in groups],
                               evaluate.mrr, depth=config.candidate_k,
                               tuned_on=f"{len(groups)} validation queries, top {config.candidate_k}")
    _say(notes, f"hybrid first stage chosen on validation: BM25 share {best.weight:g}, k {best.rrf_k:g} (MRR@10 "
                f"{report['best_value']:.4f} vs equal weights {report['baseline_value']:.4f}; dense alone "
                f"{report['dense_value']:.4f}, BM25 alone {report['bm25_value']:.4f})")
    return first_stage.with_hybrid(best), best, report


def _evaluator_kind(eval_data: TrainingData) -> str:
    """What the metrics logged during training measure (the plots say it beside their names)."""
    if any(g.candidates for g in eval_data.groups):
        return "reranking the first stage's candidates (as the table's '+ fine-tuned' row)"
    return "ranking each query's positives among its negatives (positives always present: above the table's rows)"


def _evaluator(config: TrainConfig, eval_data: TrainingData):
    """Reranking evaluator for model selection: the first stage's own candidates when the
    validation groups carry them (the task the model will face), else positives + negatives."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    groups = [g for g in eval_data.groups if g.candidates or g.negatives]
    if any(g.candidates for g in groups):
        # a query whose first stage found one document has nothing to rank (and sentence-transformers'
        # NDCG refuses it): it cannot tell models apart, so it is left out of model selection
        samples = [{"query": g.query, "positive": g.positives, "documents": g.candidates[: config.candidate_k]}
                   for g in groups if len(g.candidates[: config.candidate_k]) > 1]
        if not samples:
            return None
        return CrossEncoderRerankingEvaluator(samples, name="val", batch_size=128, always_rerank_positives=False)
    samples = [{"query": g.query, "positive": g.positives, "negative": g.negatives} for g in groups if g.negatives]
    return CrossEncoderRerankingEvaluator(samples, name="val", batch_size=128) if samples else None


def before_after(config: TrainConfig, eval_data: TrainingData, out: Path, notes: list[str],
                 train_data: TrainingData | None = None, first_stage=None, hybrid=None):
    """First stage alone, + the base model, + the fine-tuned model (plain and fused) on validation.

    With first-stage candidates in the validation groups, the fusion of the fine-tuned
    reranker with the first-stage rank is tuned here, then the weight of the known (training)
    queries on top of it (:func:`tune_known_queries`); both are saved with the model
    (:mod:`rag_rerank.model_settings`). Returns (rows, {"fusion": report, "known_queries": report} or None).
    """
    import random
    import warnings

    from ..retrieval import fusion
    from ..reranker import Reranker

    groups = eval_data.groups
    ranked = any(g.candidates for g in groups)  # a query whose first stage found nothing keeps []
    rows = []
    if ranked:
        candidates = [g.candidates[: config.candidate_k] for g in groups]
        rows.append(evaluate.ranking_row(f"first stage ({config.mine_mode}, top {config.candidate_k})", groups,
                                         candidates))
    else:  # no first stage: rerank each query's own positives + negatives, shuffled
        rng = random.Random(config.seed)
        candidates = [rng.sample(g.positives + g.negatives, len(g.positives) + len(g.negatives)) for g in groups]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = Reranker(config.base_model, max_length=config.max_length)
    untrained = any("no trained classification head" in str(w.message) for w in caught)
    label = "+ base model" + (" (untrained head)" if untrained else "")
    rows.append(evaluate.score_candidates(base, groups, candidates, label)[0])
    del base
    tuned = Reranker(str(out), max_length=config.max_length)
    row, scores = evaluate.score_candidates(tuned, groups, candidates, "+ fine-tuned")
    rows.append(row)
    settings = ModelSettings(hybrid=hybrid)
    if not (ranked and config.tune_fusion):
        settings.save(out)
        _remove_known_queries(out)
        return rows, None
    relevant = [set(g.positives) for g in groups]
    best, tuning = fusion.tune_reranker(candidates, scores, relevant, evaluate.mrr,
                                        tuned_on=f"{len(groups)} validation queries, {config.mine_mode} first stage")
    settings = settings.replace(fusion=best, first_stage=config.mine_mode, candidate_k=config.candidate_k)
    settings.save(out)
    rankings = evaluate.fused_rankings(candidates, scores, best)  # the pipeline's order, for both rows below
    if not best.is_plain:
        rows.append(evaluate.ranking_row(f"+ fine-tuned, fused {best.describe()}", groups, rankings, row.seconds))
    _say(notes, f"fusion chosen on validation: {'plain reranking' if best.is_plain else best.describe()} (MRR@10 "
                f"{tuning['best_value']:.4f} vs plain reranking {tuning['plain_value']:.4f}, first stage "
                f"{tuning['first_stage_value']:.4f})")
    if "why" in tuning:
        _say(notes, f"fusion not kept: {tuning['why']}")
    reports = {"fusion": tuning}
    if config.known_queries and train_data is not None:
        known_row, reports["known_queries"] = tune_known_queries(config, train_data, eval_data, rankings, candidates,
                                                                 out, notes, first_stage, row.seconds)
        if known_row is not None:
            rows.append(known_row)
    else:
        _remove_known_queries(out)
    return rows, reports


def tune_known_queries(config: TrainConfig, train_data: TrainingData, eval_data: TrainingData,
                       rankings: list[list[str]], candidates, out: Path, notes: list[str], first_stage=None,
                       seconds: float = 0.0):
    """Known queries: does fusing in the documents of the most similar *training* queries help the
    validation queries? Chooses the weight on validation (0 = off) and saves every query of both
    parts with the model, so the retrievers can use them. Returns (row or None, report)."""
    from ..retrieval import known_queries
    from ..retrieval.first_stage import holds

    groups = eval_data.groups
    pairs = [(g.query, g.positives) for g in train_data.groups if g.positives]
    if not pairs:
        _remove_known_queries(out)
        return None, {"skipped": "no training queries with positives"}
    # every query of both parts, as the model will keep them. Validation is carved by document, so a
    # validation query's rephrasings (queries about the same document) are validation queries too:
    # each query is matched against all the others (never itself) for the case "a similar question
    # is known", and against those about other documents only for "its document is new".
    everything = pairs + [(g.query, g.positives) for g in groups if g.positives]
    memory = known_queries.KnownQueries(everything)
    start = time.perf_counter()
    queries, relevant = [g.query for g in groups], [set(g.positives) for g in groups]
    held = holds(first_stage) if first_stage is not None else None
    known = memory.documents(queries, held, candidates, exclude_self=True)
    unseen = memory.documents(queries, held, candidates, exclude=relevant)
    fusion, tuning = known_queries.tune(
        rankings, known, relevant, evaluate.mrr, known_unseen=unseen,
        tuned_on=f"{len(groups)} validation queries (seen and unseen documents), known queries from "
                 f"{len(memory)} training and validation queries, never a query itself")
    known_queries.KnownQueries(everything, fusion).save(out)
    described = "off" if fusion.is_off else fusion.describe()
    _say(notes, f"known queries chosen on validation: {described} (MRR@10 {tuning['seen_value']:.4f} vs "
                f"{tuning['pipeline_value']:.4f} without; if the validation documents were new to training: "
                f"{tuning['unseen_value']:.4f}; known queries alone {tuning['known_alone_value']:.4f}; "
                f"{tuning['queries_with_known']} of {len(groups)} queries had known-query documents in the corpus)")
    if fusion.is_off:
        return None, tuning
    row = evaluate.ranking_row(f"+ fine-tuned, fused, + known queries ({described})", groups,
                               evaluate.known_rankings(rankings, known, fusion), seconds + time.perf_counter() - start)
    return row, tuning


def _check_output_dir(out: Path) -> None:
    """A run writes README.md, config.json, the weights and its reports into ``output_dir``: a folder that
    holds other files and no model (a project folder, ``--output .``) had its README.md overwritten in
    silence. A new or empty folder, a model's (training again) or an interrupted run's (checkpoints, for
    ``resume``) is taken."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"training option output_dir {str(out)!r} is a file; give a folder")
    if not out.is_dir() or os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 checks, before it writes
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries and "config.json" not in entries and not any(e.startswith("checkpoint-") for e in entries):
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise ValueError(f"training option output_dir {str(out)!r} holds other files ({shown}) and no model: a run "
                         "writes README.md, config.json and the weights there and would overwrite them; give a new "
                         "or empty folder")


def _remove_known_queries(out: Path) -> None:
    """A model trained again into the same directory must not keep an older run's known queries."""
    from ..retrieval import known_queries

    (out / known_queries.DATA_FILE).unlink(missing_ok=True)


def _drop_checkpoints(config: TrainConfig, out: Path, notes: list[str]) -> None:
    """A finished run needs no optimizer checkpoints (each several times the model's size):
    they exist so an interrupted run can ``--resume``. ``keep_checkpoints=True`` keeps them."""
    import shutil

    checkpoints = sorted(out.glob("checkpoint-*"))
    if config.keep_checkpoints or not checkpoints:
        return
    size = sum(f.stat().st_size for c in checkpoints for f in c.rglob("*") if f.is_file())
    for c in checkpoints:
        shutil.rmtree(c, ignore_errors=True)
    _say(notes, f"removed {len(checkpoints)} training checkpoint(s) ({size / 2**20:.0f} MiB; the model is saved in "
                f"{out}); set keep_checkpoints=true to keep them")


def _save(ce, config: TrainConfig, out: Path, notes: list[str]) -> None:
    inner = ce[0].model
    if config.lora and config.merge_lora:
        ce[0].model = inner.merge_and_unload()  # a plain model: Reranker(path) needs no PEFT
    elif config.lora:
        _say(notes, "LoRA adapter saved unmerged (merge_lora=False): load it with PEFT on top of the base model")
    ce.save(str(out))
