"""Training on CPU with tiny models and a few steps: presets, switches, outputs, resume, bad data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from rag_rerank import Reranker
from rag_rerank import model_settings
from rag_rerank.retrieval.first_stage import InMemoryCorpus, SavedCandidates
from rag_rerank.retrieval.fusion import Fusion
from rag_rerank.train import DataError, from_pairs, load, load_config, preset, train
from rag_rerank.train import model_setup
from rag_rerank.evaluate import ranking_metrics
from rag_rerank.train.fast import RerankerTrainer
from rag_rerank.train.mining import mine_hard_negatives


@pytest.fixture(scope="module")
def pairs(kornli):
    return kornli["dev"][0][:80]


@pytest.fixture(scope="module")
def bm25(kornli):
    return InMemoryCorpus(kornli["dev"][1], mode="bm25")


def tiny_config(name, tiny_ce, tmp_path, **kw):
    """The preset with steps, batch and lengths cut to what exercises its code paths in seconds."""
    base = dict(base_model=str(tiny_ce), output_dir=str(tmp_path / name), max_steps=4, eval_steps=2, save_steps=2,
                logging_steps=1, max_length=96, show_progress=False, dataloader_workers=0, per_device_batch_size=8)
    base.update(kw)
    return preset(name if name in ("seed", "fast") else "fast", **base)


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", ["seed", "fast"])
def test_preset_runs_and_writes_everything(name, tiny_ce, tmp_path, pairs, bm25):
    result = train(tiny_config(name, tiny_ce, tmp_path), from_pairs(pairs), first_stage=bm25)
    out = result.output_dir
    for f in ("model.safetensors", "config.json", "metrics.json", "report.md", "README.md", "loss.png", "eval.png"):
        assert (out / f).exists(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 4
    rows = set(metrics["validation"])
    assert {"first stage (bm25, top 30)", "+ base model", "+ fine-tuned"} <= rows
    if name == "seed":  # the original recipe: no fusion
        assert len(rows) == 3 and not (out / "rag_rerank.json").exists()
    else:  # fusion with the first stage tuned on validation and saved with the model
        saved = json.loads((out / "rag_rerank.json").read_text())
        assert saved["first_stage"] == "bm25" and "weight" in saved["fusion"]
        assert metrics["fusion"]["best"] == saved["fusion"]
        assert model_settings.load(out).fusion == Fusion(**saved["fusion"])
    assert any("eval_val_ndcg@10" in h for h in metrics["history"])  # ranking evaluator ran in training
    report_text, card = (out / "report.md").read_text(), (out / "README.md").read_text()
    assert "fp32" in report_text and "fine-tuned with `rag-rerank train`" in card
    assert "## Base model" in card and str(tiny_ce) in card and "Unknown" not in card  # the project's own card
    assert not any(q in card or d in card for q, d in pairs)  # the user's rows never copied into it
    assert "reranking the first stage's candidates" in report_text  # the plot says what it measures
    assert any("needs a CUDA GPU" in n for n in result.notes)  # the precision fallback was announced
    # a finished run keeps the model, not the optimizer checkpoints (--resume needs them only mid-run)
    assert not list(out.glob("checkpoint-*")) and any("removed 2 training checkpoint" in n for n in result.notes)
    r = Reranker(str(out))
    assert len(r.score("질문", ["문서"])) == 1


def test_seed_preset_is_the_original_recipe():
    cfg = preset("seed")
    assert (cfg.per_device_batch_size, cfg.gradient_accumulation_steps, cfg.warmup_steps, cfg.weight_decay) == (4, 4, 50, 0.01)
    assert (cfg.eval_steps, cfg.save_steps, cfg.logging_steps, cfg.mixed_precision) == (50, 50, 5, "fp16")
    assert cfg.load_best_model_at_end and cfg.metric_for_best_model == "eval_loss" and cfg.show_progress
    from rag_rerank.train.trainer import _args

    args = _args(cfg.replace(output_dir="/tmp/x"), fp16=False, bf16=False, has_eval=True)
    assert args.eval_strategy == "steps" and args.metric_for_best_model == "eval_loss" and not args.greater_is_better


def test_unset_epochs_are_three_or_enough_for_min_steps_on_small_data():
    from rag_rerank.train.recipes import TrainConfig
    from rag_rerank.train.trainer import _resolve_epochs

    notes = []
    auto = TrainConfig()
    assert auto.epochs is None
    small = _resolve_epochs(auto, rows=20_000, notes=notes)  # 625 steps an epoch at batch 32
    assert small.epochs == 4.8 and 4.8 * 625 >= 3000 and "min_steps=3000" in notes[0]
    assert _resolve_epochs(auto, rows=60_000, notes=[]).epochs == 3.0  # 3 x 1875 steps: enough already
    assert _resolve_epochs(auto.replace(epochs=1.0), rows=100, notes=[]).epochs == 1.0  # as given
    assert _resolve_epochs(auto.replace(max_steps=10), rows=100, notes=[]).epochs == 3.0  # max_steps rules
    assert _resolve_epochs(auto.replace(min_steps=0), rows=100, notes=[]).epochs == 3.0
    assert _resolve_epochs(auto.replace(per_device_batch_size=8, gradient_accumulation_steps=4), 20_000,
                           []).epochs == 4.8
    assert preset("fast").epochs == preset("seed").epochs == 1.0  # presets keep their own schedules


@pytest.mark.parametrize("loss", ["listwise", "mnrl"])
def test_other_losses(loss, tiny_ce, tmp_path, pairs, bm25):
    result = train(tiny_config("fast", tiny_ce, tmp_path, loss=loss, pretokenize=False), from_pairs(pairs),
                   first_stage=bm25)
    assert result.metrics["train"]["steps"] == 4


# ------------------------------------------------------------------ switches
def test_lora_on_albert_trains_head_and_reloads_identically(tiny_ce, tmp_path, pairs, bm25):
    from safetensors.torch import load_file

    cfg = tiny_config("fast", tiny_ce, tmp_path, lora=True, learning_rate=5e-3)
    result = train(cfg, from_pairs(pairs), first_stage=bm25)
    before = load_file(str(tiny_ce / "model.safetensors"))
    after = load_file(str(result.output_dir / "model.safetensors"))
    assert not any("lora" in k for k in after)  # merged into plain weights
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head trained
    assert torch.equal(before["albert.embeddings.word_embeddings.weight"],
                       after["albert.embeddings.word_embeddings.weight"])  # LoRA left the rest alone


def test_lora_scores_equal_before_and_after_reload(tiny_ce, tmp_path):
    from sentence_transformers import CrossEncoder

    from rag_rerank.train.recipes import TrainConfig
    from rag_rerank.train.trainer import _save

    ce = CrossEncoder(str(tiny_ce), num_labels=1)
    ce[0].model = model_setup.apply_lora(ce[0].model, 4, 8, 0.0, None)
    targets = {n.split(".")[-4] for n, _ in ce[0].model.named_parameters() if "lora_A" in n}
    assert targets == {"query", "key", "value", "dense"}
    torch.manual_seed(0)
    with torch.no_grad():  # stand-in for training: move adapters and the trainable head copy
        for _name, p in ce[0].model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    pairs = [("서울 날씨", "오늘 서울은 맑다"), ("음식", "김치찌개는 맵다")]
    expected = ce.predict(pairs).tolist()
    _save(ce, TrainConfig(lora=True, merge_lora=True), tmp_path / "merged", [])
    reloaded = Reranker(str(tmp_path / "merged"))
    assert [reloaded.score(q, [d])[0] for q, d in pairs] == pytest.approx(expected, abs=1e-5)


def test_frozen_groups_get_no_gradient(tiny_ce, tmp_path, pairs, bm25):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_ce))
    frozen = set(model_setup.apply_freezing(model, ["embeddings", "pooler"]))
    out = model(input_ids=torch.tensor([[2, 10, 11, 3]]), labels=torch.tensor([1.0]))
    out.loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in frozen), name
    assert any("embedding_hidden_mapping_in" in n for n in frozen)

    result = train(tiny_config("fast", tiny_ce, tmp_path, freeze=["embeddings"], learning_rate=1e-2),
                   from_pairs(pairs), first_stage=bm25)
    before, after = load_file(str(tiny_ce / "model.safetensors")), load_file(str(result.output_dir / "model.safetensors"))
    assert torch.equal(before["albert.embeddings.word_embeddings.weight"], after["albert.embeddings.word_embeddings.weight"])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_albert_refuses_bottom_layers(tiny_ce):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_ce))
    with pytest.raises(ValueError, match="shares one layer"):
        model_setup.apply_freezing(model, [], bottom_layers=2)
    with pytest.raises(ValueError, match="unknown parameter group"):
        model_setup.apply_freezing(model, ["attention"])


def test_albert_gradient_checkpointing_recomputes_each_pass_with_identical_gradients(tiny_ce):
    from transformers import AutoModelForSequenceClassification

    def grads(checkpointed: bool):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(tiny_ce))
        model.train()  # dropout on: the checkpoint must replay the same masks
        calls = []
        layer = next(m for m in model.modules() if type(m).__name__ == "AlbertLayer")
        # a pre-hook: the recomputation stops early, inside the layer, once it has what backward needs
        layer.register_forward_pre_hook(lambda *_: calls.append(1))
        if checkpointed:
            assert "checkpointed" in model_setup.enable_gradient_checkpointing(model)
        ids = torch.randint(5, 100, (3, 17))
        torch.manual_seed(1)
        model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls), model

    plain, plain_calls, _ = grads(False)
    ckpt, ckpt_calls, model = grads(True)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6), name
    passes = model.config.num_hidden_layers
    assert plain_calls == passes and ckpt_calls == 2 * passes  # every pass recomputed in backward
    assert set(model.state_dict()) == set(AutoModelForSequenceClassification.from_pretrained(str(tiny_ce)).state_dict())


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, korean_sentences):
    from transformers import BertConfig, BertForSequenceClassification

    from rag_rerank.testing import train_unigram_tokenizer

    path = tmp_path_factory.mktemp("bert") / "ce"
    tok = train_unigram_tokenizer(korean_sentences)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_bert_bottom_layers_and_gradient_checkpointing(tiny_bert, tmp_path, pairs, bm25):
    from safetensors.torch import load_file

    cfg = tiny_config("fast", tiny_bert, tmp_path, freeze_bottom_layers=2, gradient_checkpointing=True,
                      learning_rate=1e-2, lora=False)
    result = train(cfg, from_pairs(pairs), first_stage=bm25)
    before, after = load_file(str(tiny_bert / "model.safetensors")), load_file(str(result.output_dir / "model.safetensors"))
    key = lambda i: f"bert.encoder.layer.{i}.attention.self.query.weight"
    assert torch.equal(before[key(0)], after[key(0)]) and torch.equal(before[key(1)], after[key(1)])
    assert not torch.equal(before[key(2)], after[key(2)])


def test_bert_lora_uses_peft_defaults(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = model_setup.apply_lora(AutoModelForSequenceClassification.from_pretrained(str(tiny_bert)), 4, 8, 0.0, None)
    targets = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert targets == {"query", "value"}
    assert any("modules_to_save" in n and "classifier" in n for n, _ in model.named_parameters())


def test_memory_report(tiny_ce, tmp_path, pairs, capsys):
    result = train(tiny_config("fast", tiny_ce, tmp_path, memory_report=True, max_steps=2), from_pairs(pairs))
    mem = result.metrics["memory"]
    assert mem["estimate"]["total"] == sum(v for k, v in mem["estimate"].items() if k != "total")
    assert mem["peak"] > 0 and "measured peak" in capsys.readouterr().out


def test_resume_continues_from_the_saved_step(tiny_ce, tmp_path, pairs, monkeypatch):
    cfg = tiny_config("seed", tiny_ce, tmp_path, max_steps=4, save_steps=2, gradient_accumulation_steps=1,
                      load_best_model_at_end=False, validation_fraction=0.0, keep_checkpoints=True)
    train(cfg, from_pairs(pairs))
    assert (tmp_path / "seed" / "checkpoint-4").exists()
    calls = []
    real = RerankerTrainer.compute_loss
    monkeypatch.setattr(RerankerTrainer, "compute_loss", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    result = train(cfg.replace(max_steps=6), from_pairs(pairs), resume=True)
    assert result.metrics["train"]["steps"] == 6
    assert len(calls) == 2  # only steps 5 and 6 ran


def test_output_dir_with_other_files_is_refused_before_anything_is_written(tiny_ce, tmp_path, pairs):
    """`--output .` in a project folder had its README.md overwritten by the model card in silence. A folder
    with other files and no model is refused untouched; a model's folder (training again) is taken."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("my project", encoding="utf-8")
    cfg = tiny_config("seed", tiny_ce, tmp_path, max_steps=2, validation_fraction=0.0).replace(output_dir=str(project))
    with pytest.raises(ValueError, match=r"output_dir .*project' holds other files \(README.md\) and no model"):
        train(cfg, from_pairs(pairs))
    assert [p.name for p in project.iterdir()] == ["README.md"] and (project / "README.md").read_text() == "my project"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        train(cfg.replace(output_dir=str(tmp_path / "a-file")), from_pairs(pairs))
    model = tmp_path / "again"
    for _ in range(2):  # a second run into the first one's folder is training again
        assert train(cfg.replace(output_dir=str(model)), from_pairs(pairs)).metrics["train"]["steps"] == 2


# ---------------------------------------------------------------------- data
def test_load_formats(tmp_path, data_dir):
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"query": "q1", "positive": "p1", "negative": ["n1", "n2"]},
        {"query": "q2", "positives": ["p2"]},
        {"query": "q3", "document": "d3", "label": 0.25},
        {"query": "q4", "document": "d4"},
    ]), encoding="utf-8")
    data = load(f)
    assert [g.query for g in data.groups] == ["q1", "q2", "q4"] and data.groups[0].negatives == ["n1", "n2"]
    assert data.pairs[0].label == 0.25
    sts = load(data_dir / "korsts" / "sts-dev.tsv")
    assert len(sts.pairs) == 300 and max(p.label for p in sts.pairs) == 1.0  # the fixture: 300 dev rows
    csv = tmp_path / "d.csv"
    csv.write_text("question,answer,label\n안녕,반가워,1\n", encoding="utf-8")
    assert load(csv).pairs[0].label == 1.0


@pytest.mark.parametrize("rows, message", [
    (['{"query": "q", "positive": "p"}', '{"query": "", "positive": "p"}'], r":2: query is empty"),
    (['{"query": "q", "document": "d", "label": 3}'], r":1: label 3 is outside"),
    (['{"query": "q", "document": "d", "label": "x"}'], r":1: label 'x' is not a number"),
    (['{"qry": "q", "positive": "p"}'], r":1: no query column"),
    (['{"query": "q"}'], r":1: no document column"),
    (['{"query": "q", "positive": "p"}', "not json"], r":2: not valid JSON"),
    (['{"query": "q", "positives": ["a", null]}'], r":1: positive\[1\] is empty"),
])
def test_bad_data_names_the_line(tmp_path, rows, message):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(rows), encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load(f)


def test_a_query_given_by_several_rows_is_one_query(tmp_path):
    """qrels-style files name a query once per relevant document. Each row was a query of its own: evaluation
    scored a query with two relevant documents as two queries (each counting the other's document a miss) and
    mining could take the other row's positive as a hard negative. Rows of one query (and topic) are one group."""
    f = tmp_path / "q.csv"
    f.write_text("query,document\n서울은?,서울은 수도\n김치?,김치는 발효\n서울은?,서울 특별시\n", encoding="utf-8")
    groups = load(f).groups
    assert [(g.query, g.positives) for g in groups] == [("서울은?", ["서울은 수도", "서울 특별시"]),
                                                        ("김치?", ["김치는 발효"])]
    f = tmp_path / "t.jsonl"  # triplets: one (query, positive, negative) a line; topics keep queries apart
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"query": "q", "positive": "p", "negative": "n1"}, {"query": "q", "positive": "p", "negative": "n2"},
        {"query": "q", "positive": "p2", "topic": "other"}]), encoding="utf-8")
    assert [(g.positives, g.negatives, g.topic) for g in load(f).groups] == [(["p"], ["n1", "n2"], None),
                                                                            (["p2"], [], "other")]
    f.write_text('{"query": "q", "positive": "p"}\n{"query": "q", "positive": "x", "negative": "p"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl:2: 'p' is both a positive and a negative of query 'q' \(with "
                                        r"the row at .*t.jsonl:1\)"):
        load(f)
    f.write_text('{"query": "q", "positive": "p", "candidates": ["a"]}\n'
                 '{"query": "q", "positive": "p", "candidates": ["b"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl:2: query 'q' is given other first-stage candidates"):
        load(f)


def test_evaluation_takes_labelled_pairs_as_judgements(tmp_path):
    """A (query, document, label) file is what qrels and graded sets look like: a label >= 0.5 is relevant,
    below it a negative; a query with no relevant document is counted and left out. Groups given in Python
    are not changed."""
    f = tmp_path / "p.csv"
    f.write_text("query,document,label\na,d1,1\na,d2,0\nb,d3,0\nc,d4,1\na,d5,0.5\n", encoding="utf-8")
    data = load(f)
    groups, unjudged = data.for_evaluation()
    assert [(g.query, g.positives, g.negatives) for g in groups] == [("a", ["d1", "d5"], ["d2"]), ("c", ["d4"], [])]
    assert unjudged == 1
    given = from_pairs([("a", "d0")])
    given.pairs.extend(data.pairs)
    groups, _ = given.for_evaluation()
    assert groups[0].positives == ["d0", "d1", "d5"] and given.groups[0].positives == ["d0"]


def test_mining_never_takes_a_relevant_document_of_the_query_as_a_negative(bm25, pairs):
    """Data built in Python may name a query in several groups, or mark a document relevant by a pair: each
    is the query's positive, so none is mined as its negative."""
    from rag_rerank.train.data import Group, ScoredPair, TrainingData

    hypothesis, premise = pairs[0]
    others = [h.text for h in bm25.candidates(hypothesis, 6) if h.text != premise][:2]
    data = TrainingData([Group(hypothesis, [premise]), Group(hypothesis, [others[0]])],
                        [ScoredPair(hypothesis, others[1], 1.0)])
    mined = mine_hard_negatives(data, bm25, num_hard=5, num_random=0)
    for g in mined.groups:
        assert not {premise, *others} & set(g.negatives)


@pytest.mark.parametrize("loss", ["listwise", "mnrl"])
def test_ranking_losses_train_on_every_positive_of_a_group(loss):
    """A group's later positives were dropped by the listwise and MNRL datasets (the first one only)."""
    from rag_rerank.train.data import Group, TrainingData
    from rag_rerank.train.recipes import TrainConfig
    from rag_rerank.train.trainer import _datasets

    ds = _datasets(TrainConfig(loss=loss), TrainingData([Group("q", ["p1", "p2"], ["n1", "n2"])]))
    assert len(ds) == 2
    if loss == "listwise":
        assert ds["docs"] == [["p1", "n1", "n2"], ["p2", "n1", "n2"]] and ds["labels"][1] == [1, 0, 0]
    else:
        assert ds["positive"] == ["p1", "p2"] and ds["negative_2"] == ["n2", "n2"]


def test_validation_given_apart_that_repeats_training_is_said(tiny_ce, tmp_path, pairs):
    """--eval-data holding training's queries or relevant documents overstates the model (and tunes fusion on
    what it was shown); a carved part never does. Said in the notes, with counts; clean validation says nothing."""
    from rag_rerank.train.trainer import _overlap

    train_part, other = from_pairs(pairs[:40]), from_pairs(pairs[40:60])
    assert _overlap(train_part, other) is None
    note = _overlap(train_part, from_pairs(pairs[30:50]))
    assert note.startswith("warning: validation repeats training - 10 of 20 validation queries are training "
                           "queries, 10 of its 20 relevant documents")
    result = train(tiny_config("seed", tiny_ce, tmp_path, max_steps=1), train_part, from_pairs(pairs[35:45]))
    assert any(n.startswith("warning: validation repeats training - 5 of 10") for n in result.notes)
    # extra data holding the validation part (the same set given as --data and --extra-data): said too, even
    # where validation is carved
    extra = from_pairs(pairs[:60])
    extra.groups = [g.__class__(g.query, g.positives, ["부정 예시"]) for g in extra.groups]  # mined: negatives
    result = train(tiny_config("seed", tiny_ce, tmp_path / "x", max_steps=1, validation_fraction=0.25,
                               validation_min_queries=0), train_part, extra_data=[("extra.jsonl", extra)])
    assert any(n.startswith("warning: validation repeats training - 10 of 10") for n in result.notes)
    carved = train(tiny_config("seed", tiny_ce, tmp_path / "c", max_steps=1, validation_fraction=0.25,
                               validation_min_queries=0), train_part)
    assert not any("validation repeats training" in n for n in carved.notes)


def test_training_says_when_positives_are_not_in_the_corpus(tiny_ce, tmp_path, pairs):
    """Positives are matched by text: a corpus that does not hold them (stripped, re-encoded, another
    version) leaves every mined candidate list without its answer and may mine a variant of it as a negative.
    Said for each part, with the first such query."""
    premises = [p for _, p in pairs]
    corpus = InMemoryCorpus([p + " " for p in premises[:30]] + premises[30:], mode="bm25")  # 30 altered
    result = train(tiny_config("seed", tiny_ce, tmp_path, max_steps=1), from_pairs(pairs[:60]),
                   from_pairs(pairs[60:]), first_stage=corpus)
    said = [n for n in result.notes if "no positive in the corpus searched" in n]
    assert len(said) == 1 and said[0].startswith(f"warning: 30 of 60 queries in the training data have no positive "
                                                 f"in the corpus searched (first: {pairs[0][0][:60]!r})")


def test_bad_csv_row_after_a_multiline_cell_names_its_own_line(tmp_path):
    """A quoted cell may hold line breaks (an answer of several lines, as Excel writes it): errors counted
    records, so a later row's error named a line too early."""
    f = tmp_path / "faq.csv"
    f.write_text('query,document,label\n\n"환불은?","구매 후 7일 이내\r\n고객센터에\n신청",1\n"배송?","2~3일",x\n',
                 encoding="utf-8")
    with pytest.raises(DataError, match=r"faq.csv:6: label 'x' is not a number"):
        load(f)


def test_a_json_array_of_rows_loads(tmp_path):
    """A .json file holding one array of rows (pandas' to_json(orient="records"), as `index` reads .json) was
    refused as "not valid JSON" at its first line; a bad item is named by its place."""
    f = tmp_path / "rows.json"
    f.write_text(json.dumps([{"query": "q1", "positive": "p1"}, {"query": "q2", "document": "d", "label": 0}],
                            indent=2), encoding="utf-8")
    data = load(f)
    assert [g.query for g in data.groups] == ["q1"] and data.pairs[0].label == 0.0
    f.write_text('[{"query": "q1", "positive": "p1"}, "q2"]', encoding="utf-8")
    with pytest.raises(DataError, match=r"rows.json\[1\]: each item must be a JSON object"):
        load(f)
    f.write_text('{"query": "q1", "positive": "p1"}\n{"query": "q2", "positive": "p2"}\n', encoding="utf-8")
    assert len(load(f).groups) == 2  # JSON lines under a .json name, as before


def test_bad_tsv_names_the_line(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("query\tdocument\tlabel\nq\td\t0.5\nq2\t\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:3: document is empty"):
        load(f)


def test_train_checks_data_built_in_python(tmp_path, tiny_ce):
    """Files are checked as they are read; data built in Python reached the trainer unchecked: no rows failed
    in min() of an empty sequence, and a NaN label trained on a NaN loss. Both name the row now, before any
    model loads."""
    from rag_rerank.train.data import Group, ScoredPair, TrainingData

    cfg = preset("fast", base_model=str(tiny_ce), output_dir=str(tmp_path / "out"))
    for data, says in ((TrainingData(), "train_data holds no rows"),
                       (TrainingData(pairs=[ScoredPair("q", "d", 1.0), ScoredPair("q", "e", float("nan"))]),
                        r"train_data.pairs\[1\]: label nan"),
                       (TrainingData(pairs=[ScoredPair("q", None, 1.0)]), r"pairs\[0\]: document"),
                       (TrainingData(groups=[Group("q", [])]), r"groups\[0\]: no positive"),
                       (TrainingData(groups=[Group("q", "abc")]), r"groups\[0\]: positives must be a list")):
        with pytest.raises(DataError, match=says):
            train(cfg, data)
    assert not (tmp_path / "out").exists()
    # lora_targets without lora was ignored in silence (every weight trained); refused where the options are final
    with pytest.raises(ValueError, match="lora_targets needs lora=true"):
        train(cfg.replace(lora_targets=["query"]), TrainingData(pairs=[ScoredPair("q", "d", 1.0)]))


def test_a_short_csv_row_is_an_error_not_a_positive(tmp_path):
    """A row missing its label field was read as a (query, positive) row: a pair labelled 0 in the user's
    file could train as a positive. It names the line and the missing column now."""
    for name, text in (("short.tsv", "query\tdocument\tlabel\nq\td\t0\nq2\td2\n"),
                       ("short.csv", "query,document,label\nq,d,0\nq2,d2\n")):
        f = tmp_path / name
        f.write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match=rf"{name}:3: 2 fields where the header has 3 \(no 'label'\)"):
            load(f)
    f = tmp_path / "full.tsv"
    f.write_text("query\tdocument\tlabel\nq\td\t0\nq2\td2\t1\n", encoding="utf-8")
    assert [(p.query, p.label) for p in load(f).pairs] == [("q", 0.0), ("q2", 1.0)]


def test_from_pairs_and_split():
    data = from_pairs([("q1", "a"), ("q1", "b"), ("q2", "c"), ("q3", "d")])
    assert [g.positives for g in data.groups] == [["a", "b"], ["c"], ["d"]]
    train_part, val = data.split(0.34, seed=1)
    assert {g.query for g in train_part.groups}.isdisjoint({g.query for g in val.groups}) and len(val.groups) == 1
    with pytest.raises(DataError, match=r"pairs\[0\]"):
        from_pairs([("q",)])


def test_validation_is_carved_by_document_so_questions_on_one_passage_stay_together():
    """KorQuAD-style data: several questions per passage. Carved by query, validation would ask
    about passages training already saw; carved by document (the default), no passage is on both sides."""
    pairs = [(f"p{i} 질문 {j}", f"passage {i}") for i in range(40) for j in range(6)]
    pairs += [(f"공통 질문 {j}", "공통 답") for j in range(100)]  # one answer shared by many questions
    data = from_pairs(pairs)
    for seed in range(5):
        train_part, val = data.split(0.1, seed=seed)
        seen = {d for g in train_part.groups for d in g.positives}
        assert val.groups and not seen & {d for g in val.groups for d in g.positives}
        assert len(val.groups) == 34 - 34 % 6 and "공통 답" in seen  # whole passages; the big cluster stays in training
    by_query = [data.split(0.1, seed=s, by="query") for s in range(5)]
    assert any({d for g in t.groups for d in g.positives} & {d for g in v.groups for d in g.positives}
               for t, v in by_query)  # the leak the default avoids
    with pytest.raises(ValueError, match="split by"):
        data.split(0.1, by="passage")


def test_validation_holds_whole_topics_out_when_rows_name_them(tmp_path):
    """Rows with a topic (an article): validation takes whole topics, so no article is on both sides -
    carved by passage, validation asked about articles training had read and promised more than
    unseen articles gave. The topic survives saving, mining's rewrite and a reload."""
    from rag_rerank.train.data import save_jsonl

    rows = [{"query": f"a{a} p{p} 질문 {j}", "positive": f"article {a} passage {p}", "topic": f"article {a}"}
            for a in range(12) for p in range(4) for j in range(3)]
    rows += [{"query": "번호 주제", "positive": "숫자 주제 문서", "topic": 7}]  # a numeric topic reads as text
    f = tmp_path / "topics.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    data = load(f)
    assert data.groups[0].topic == "article 0" and data.groups[-1].topic == "7"
    for seed in range(4):
        train_part, val = data.split(0.2, seed=seed)
        assert val.groups and {g.topic for g in train_part.groups}.isdisjoint({g.topic for g in val.groups})
    by_document = [data.split(0.2, seed=s, by="document") for s in range(4)]
    assert any({g.topic for g in t.groups} & {g.topic for g in v.groups} for t, v in by_document)
    save_jsonl(data, tmp_path / "saved.jsonl.gz")
    assert [g.topic for g in load(tmp_path / "saved.jsonl.gz").groups] == [g.topic for g in data.groups]
    f.write_text(json.dumps({"query": "q", "positive": "d", "topic": ""}), encoding="utf-8")
    with pytest.raises(DataError, match=r"topics.jsonl:1: topic is empty"):
        load(f)


def test_extra_data_is_mixed_in_at_most_its_share_with_groups_whole():
    from rag_rerank.train.data import Group, ScoredPair, TrainingData, mix_in

    primary = TrainingData([Group(f"q{i}", [f"p{i}"], [f"n{i}a", f"n{i}b", f"n{i}c"]) for i in range(50)])  # 200 rows
    nli = TrainingData([Group(f"h{i}", [f"premise {i}"], [f"other {i}"]) for i in range(300)])  # 600 rows
    sts = ("sts", TrainingData(pairs=[ScoredPair(f"s{i}", f"t{i}", i / 199) for i in range(200)]))
    mixed, lines = mix_in(primary, [("nli", nli), sts], share=0.5, seed=3)
    extra_groups = [g for g in mixed.groups if g.query.startswith("h")]
    assert mixed.groups[:50] == primary.groups  # the primary task whole, first
    assert all(g in nli.groups for g in extra_groups)  # sampled whole, never cut
    extra_rows = 2 * len(extra_groups) + len(mixed.pairs)
    assert 190 <= extra_rows <= 200  # at most as many rows as the primary's (share 0.5), nearly all of them
    assert abs(2 * len(extra_groups) / 600 - len(mixed.pairs) / 200) < 0.02  # both sampled by one fraction
    assert lines == [f"nli: {2 * len(extra_groups)} of 600 rows", f"sts: {len(mixed.pairs)} of 200 rows"]
    assert mix_in(primary, [("nli", nli)], share=0.5, seed=3)[0].groups != mix_in(primary, [("nli", nli)], share=0.5,
                                                                                  seed=4)[0].groups
    small, lines = mix_in(primary, [sts], share=0.9)  # less than the share allows: all of it
    assert len(small.pairs) == 200 and lines == ["sts: 200 of 200 rows"]
    with pytest.raises(DataError, match=r"raw.jsonl: 1 of 2 queries have no negatives .*rag-rerank mine"):
        mix_in(primary, [("raw.jsonl", TrainingData([Group("a", ["b"], ["c"]), Group("x", ["y"])]))], share=0.5)
    with pytest.raises(ValueError, match="extra_data_share"):
        mix_in(primary, [sts], share=1.0)


def test_config_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("preset: fast\nlearning_rate: 3.0e-4\nfreeze: [embeddings]\n")
    cfg = load_config(y)
    assert cfg.per_device_batch_size == 256 and cfg.fused_gelu and cfg.learning_rate == 3e-4 and cfg.freeze == ["embeddings"]
    t = tmp_path / "c.toml"
    t.write_text('preset = "seed"\nepochs = 3\n')
    assert load_config(t, max_length=128).epochs == 3 and load_config(t, max_length=128).max_length == 128
    with pytest.raises(ValueError, match="unknown training option"):
        preset("seed", batchsize=3)


@pytest.mark.parametrize("option, value, message", [
    ("loss", "foo", "loss must be one of bce, listwise, mnrl"),
    ("mixed_precision", "int8", "mixed_precision must be one of auto"),
    ("metric_for_best_model", "ndcg@5", "metric_for_best_model must be one of"),
    ("eval_steps", 0, "eval_steps must be a fraction"),
    ("save_steps", 1.5, "save_steps must be a fraction"),
    ("max_length", 2, "max_length must be >= 8"),
    ("lora_dropout", 1.5, "lora_dropout must be in"),
    ("seed", -1, "seed >= 0"),
    ("num_hard_negatives", -1, "num_hard_negatives must be >= 0"),
    ("freeze", ["embedding"], "freeze must be parameter groups"),
    ("freeze", 3, "freeze must be parameter groups"),
    ("lora_targets", [], "lora_targets must be a non-empty list"),
    ("output_dir", " ", "output_dir is empty"),
])
def test_options_that_failed_late_are_refused_as_they_enter(option, value, message):
    """Each of these passed the option checks and failed later - after the model loaded and data was mined,
    an unknown metric only at the first evaluation - with a dependency's traceback, or not at all."""
    with pytest.raises(ValueError, match=f"training option.*{message}"):
        preset("seed", **{option: value})
    assert preset("seed", mixed_precision="FP16", metric_for_best_model="MRR@10", eval_steps=50).eval_steps == 50
    # one string is its comma-separated items (--set freeze=embeddings, a YAML scalar), as --freeze reads them
    listed = preset("seed", freeze="embeddings, layer.2", lora_targets="query,value")
    assert listed.freeze == ["embeddings", "layer.2"] and listed.lora_targets == ["query", "value"]


# -------------------------------------------------------------- mining, metrics
def test_mining_excludes_positives_and_mixes_random(kornli, bm25):
    data = from_pairs(kornli["dev"][0][:30])
    mined = mine_hard_negatives(data, bm25, num_hard=3, num_random=2, seed=0)
    for before, after in zip(data.groups, mined.groups):
        assert not set(after.negatives) & set(before.positives)
        found = [h.text for h in bm25.candidates(before.query, 30) if h.text not in before.positives]
        hard = min(3, len(found))  # BM25 finds only documents sharing a term with the query
        assert len(after.negatives) == hard + 2 and len(set(after.negatives)) == hard + 2
        assert after.negatives[:hard] == found[:hard]  # the hard ones are the first stage's own top hits
    assert sum(len(g.negatives) == 5 for g in mined.groups) >= 20  # most queries got all three hard ones
    ranked = [h.text for h in bm25.candidates(data.groups[0].query, 30)]
    assert mined.groups[0].candidates == ranked  # the first stage's ranking, kept for validation/fusion

    skipped = mine_hard_negatives(data, bm25, num_hard=3, num_random=0, skip_top=2, seed=0)
    for before, after in zip(data.groups, skipped.groups):
        below = [h.text for h in bm25.candidates(before.query, 32)[2:] if h.text not in before.positives]
        assert after.negatives == below[:3]  # hard negatives start below the top 2
    for bad in (dict(num_hard=-1), dict(num_random=-2), dict(skip_top=-1), dict(candidate_k=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):  # a negative count was sliced from the list's end
            mine_hard_negatives(data, bm25, **{"num_random": 0, **bad})


def test_negative_mix_follows_the_first_stage_score(kornli, bm25):
    """Unset negative counts come from how well the first stage already ranks the queries' positives:
    mostly hard negatives behind a strong first stage, mostly random ones behind a weak one."""
    from rag_rerank.train.data import Group
    from rag_rerank.train.mining import MIX_FOR_STRONG, MIX_FOR_WEAK, STRONG_FIRST_STAGE, choose_mix, default_mix

    assert default_mix(STRONG_FIRST_STAGE) == MIX_FOR_STRONG and default_mix(STRONG_FIRST_STAGE - 0.01) == MIX_FOR_WEAK
    assert MIX_FOR_STRONG[0] > MIX_FOR_STRONG[1] and MIX_FOR_WEAK[0] < MIX_FOR_WEAK[1]
    premises = kornli["dev"][1][:40]  # the corpus BM25 searches
    # A premise asked verbatim: BM25 ranks it first (MRR 1). The same queries labelled with the
    # next premise: BM25 rarely ranks that one first, so the first stage looks weak on them.
    strong = [Group(p, [p], []) for p in premises]
    weak = [Group(p, [premises[(i + 1) % len(premises)]], []) for i, p in enumerate(premises)]
    hard, rand, why = choose_mix(bm25, strong)
    assert (hard, rand) == MIX_FOR_STRONG and "at or above" in why and "40 queries" in why
    hard, rand, why = choose_mix(bm25, weak)
    assert (hard, rand) == MIX_FOR_WEAK and "below" in why
    hard, rand, why = choose_mix(bm25, weak, num_hard=2)  # a given count is kept, and the message says so
    assert (hard, rand) == (2, MIX_FOR_WEAK[1]) and why.endswith(f"2 hard + {MIX_FOR_WEAK[1]} random negatives (hard as given)")
    with pytest.raises(ValueError, match="num_hard"):  # -1 was taken, reported as the default mix, sliced from the end
        choose_mix(bm25, weak, num_hard=-1)
    assert choose_mix(bm25, strong, num_hard=2, num_random=3) == (2, 3, "as given")
    assert choose_mix(bm25, [])[:2] == MIX_FOR_WEAK  # nothing to score: the cautious mix


def test_saved_candidates_replay_the_first_stage(kornli, bm25):
    """Mining from saved rankings (no store on the training machine) draws the same hard negatives
    as mining from the live first stage, and random ones from the texts the file names."""
    data = from_pairs(kornli["dev"][0][:30])
    saved = SavedCandidates(mine_hard_negatives(data, bm25, num_hard=0, num_random=0, candidate_k=30), mode="bm25")
    live = mine_hard_negatives(data, bm25, num_hard=3, num_random=0, seed=0)
    replayed = mine_hard_negatives(data, saved, num_hard=3, num_random=2, seed=0)
    for a, b in zip(live.groups, replayed.groups):
        hard = len(a.negatives)
        assert b.negatives[:hard] == a.negatives and b.candidates == a.candidates
        assert len(b.negatives) == hard + 2 and set(b.negatives[hard:]) <= set(saved.texts)
        assert not set(b.negatives) & set(b.positives)
    assert saved.mode == "bm25"
    with pytest.raises(ValueError, match="no ranking saved"):
        saved.candidates("처음 보는 질문", 5)
    with pytest.raises(ValueError, match="carries 'candidates'"):
        SavedCandidates(data)


def test_saved_candidates_name_documents_by_id(tmp_path, kornli, bm25):
    """mine / eval --save-candidates files hold each text once and rows of ids: they grow with the
    number of queries, not queries x passage length, and load back to the same groups."""
    from rag_rerank.train.data import save_jsonl

    mined = mine_hard_negatives(from_pairs(kornli["dev"][0][:60]), bm25, num_hard=1, num_random=7, seed=0)
    by_id, by_text = tmp_path / "ids.jsonl.gz", tmp_path / "texts.jsonl.gz"
    save_jsonl(mined, by_id)
    save_jsonl(mined, by_text, by_id=False)
    assert load(by_id).groups == mined.groups == load(by_text).groups
    import gzip

    lines = gzip.open(by_id, "rt", encoding="utf-8").read().splitlines()
    texts = {t for g in mined.groups for t in (*g.positives, *g.negatives, *g.candidates)}
    assert set(json.loads(lines[0])) == {"documents"}
    assert sorted(json.loads(lines[0])["documents"].values()) == sorted(texts)  # each text once
    assert "candidate_ids" in json.loads(lines[1]) and len(lines) == 1 + len(mined.groups)
    assert not any(t in line for line in lines[1:] for t in texts)  # rows name documents, never copy them
    plain_id, plain_text = tmp_path / "ids.jsonl", tmp_path / "texts.jsonl"
    save_jsonl(mined, plain_id)
    save_jsonl(mined, plain_text, by_id=False)
    assert plain_id.stat().st_size < plain_text.stat().st_size / 2  # even for KorNLI's one-sentence documents
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + '{"query": "q", "positive_ids": ["nope"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:2.*'nope'"):
        load(bad)
    orphan = tmp_path / "orphan.jsonl"
    orphan.write_text('{"query": "q", "positive_ids": ["a"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="orphan.jsonl:1.*documents"):
        load(orphan)


def test_ranking_metrics_by_hand():
    m = ranking_metrics([["x", "a", "y"], ["b", "z"]], [{"a"}, {"b", "c"}])
    assert m["MRR@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["R@1"] == pytest.approx((0 + 0.5) / 2) and m["R@10"] == pytest.approx((1 + 0.5) / 2)
    import math

    ndcg2 = 1.0 / (1 + 1 / math.log2(3))
    assert m["NDCG@10"] == pytest.approx((1 / math.log2(3) + ndcg2) / 2)


def test_a_text_ranked_twice_gains_once():
    """Rankings of texts hold a chunk stored twice twice; counted at both places, NDCG@10 read 1.63."""
    import math

    m = ranking_metrics([["a", "a", "b"], ["x", "b", "b", "c"]], [{"a"}, {"b", "c"}])
    assert m["NDCG@10"] == pytest.approx((1.0 + (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))) / 2)
    assert m["MRR@10"] == pytest.approx((1.0 + 0.5) / 2) and m["R@10"] == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in ranking_metrics([["a"] * 10], [{"a"}]).values())


def test_ranking_metrics_refuse_one_string_for_a_ranking_or_its_relevant_set():
    """A ranking given as one string was read as its characters, and a relevant "set" given as one string
    answered `in` as a substring test: both scored in silence."""
    with pytest.raises(TypeError, match=r"ranked\[1\] is one string"):
        ranking_metrics([["a"], "ab"], [{"a"}, {"b"}])
    with pytest.raises(TypeError, match=r"relevant\[0\] is one string"):
        ranking_metrics([["a"]], ["abc"])


def test_fused_gelu_is_the_same_function(tiny_ce):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_ce)).eval()
    ids = torch.randint(5, 300, (3, 24))
    before = model(input_ids=ids).logits
    assert model_setup.fuse_gelu(model) == 1  # ALBERT: one shared layer, one activation
    after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)
    assert model.config.hidden_act == "gelu_new"  # the saved model is unchanged
    x = torch.linspace(-6, 6, 1001)
    from transformers.activations import GELUTanh, NewGELUActivation

    assert torch.allclose(NewGELUActivation()(x), GELUTanh()(x), atol=1e-6)


def test_fast_preset_uses_fused_adamw_on_cuda_only():
    from rag_rerank.train.trainer import _args

    cfg = preset("fast", output_dir="/tmp/x")
    assert _args(cfg, False, False, True, device=torch.device("cuda:0")).optim == "adamw_torch_fused"
    assert _args(cfg, False, False, True, device=torch.device("cpu")).optim == "adamw_torch"
    assert _args(cfg.replace(optim="sgd"), False, False, True).optim == "sgd"


def test_one_process_trains_on_its_own_gpu_not_dataparallel(monkeypatch):
    """On a multi-GPU box without torchrun the Trainer would wrap the model in DataParallel over all
    GPUs (sentence-transformers' losses then crash on .device; seen on a 2 x H200 machine) and put it
    on cuda:0. The resolved device is pinned instead; under torchrun each rank keeps its own."""
    from rag_rerank.train.trainer import _args

    cfg = preset("seed", output_dir="/tmp/x")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    args = _args(cfg, False, False, True, device=torch.device("cuda:1"))
    assert args.n_gpu == 1 and args.device == torch.device("cuda:1")
    assert _args(cfg, False, False, True, device=torch.device("cuda")).device == torch.device("cuda:0")  # bare cuda
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _args(cfg, False, False, True, device=torch.device("cuda:1")).device != torch.device("cuda:1")
    # DDP drops each rank's last incomplete eval batch: 12 validation rows on 2 ranks -> batches of 6
    assert _args(cfg, False, False, True, eval_rows=12).per_device_eval_batch_size == 6
    assert _args(cfg, False, False, True, eval_rows=1000).per_device_eval_batch_size == 16


def test_model_selection_skips_queries_with_a_single_candidate():
    """On a small corpus BM25 can find one document for a query: nothing to rank, and
    sentence-transformers' NDCG raises on it. Such queries are left out of model selection."""
    from rag_rerank.train.data import Group, TrainingData
    from rag_rerank.train.trainer import _evaluator

    config = preset("fast")
    lone = Group("질문 하나", ["답"], [], ["답"])
    ranked = Group("질문 둘", ["답 둘"], [], ["오답", "답 둘", "다른 오답"])
    evaluator = _evaluator(config, TrainingData([lone, ranked]))
    assert [s["query"] for s in evaluator.samples] == ["질문 둘"]
    assert _evaluator(config, TrainingData([lone])) is None  # nothing rankable: chosen by eval loss instead


def test_default_base_falls_back_to_the_offline_e5_when_the_hub_cannot_deliver(monkeypatch):
    from rag_rerank import models
    from rag_rerank.train.recipes import DEFAULT_BASE, TrainConfig
    from rag_rerank.train.trainer import OFFLINE_BASE, resolve_base

    asked = []

    def no_hub(name, **kw):  # only the offline twin resolves
        asked.append(name)
        if name != OFFLINE_BASE:
            raise models.ModelNotFoundError(f"could not load model {name!r}")
        return Path("/twin")

    monkeypatch.setattr(models, "resolve", no_hub)
    notes = []
    config, path = resolve_base(TrainConfig(), notes)
    assert config.base_model == OFFLINE_BASE == "intfloat/multilingual-e5-small" and path == Path("/twin")
    assert asked == [DEFAULT_BASE, OFFLINE_BASE]  # each name resolved once: training reuses the path
    assert DEFAULT_BASE in notes[0] and "offline" in notes[0]  # said aloud
    with pytest.raises(models.ModelNotFoundError):  # a base the user named is never swapped
        resolve_base(TrainConfig(base_model="someone/else"), [])


def test_training_tunes_the_hybrid_on_validation_and_the_retriever_uses_it(tiny_ce, tiny_encoder, tmp_path, kornli):
    """A hybrid first stage: BM25's share is chosen on the validation queries before mining, saved
    with the model, and a TwoStageRetriever over a store takes it from the model (hybrid='auto')."""
    from rag_rerank.retrieval.first_stage import EQUAL
    from rag_rerank.retrieval.pipeline import TwoStageRetriever
    from rag_rerank.retrieval.store import ChromaStore

    premises = kornli["dev"][1]
    corpus = InMemoryCorpus(premises, mode="hybrid", encoder=str(tiny_encoder))  # a random dense side
    result = train(tiny_config("fast", tiny_ce, tmp_path), from_pairs(kornli["dev"][0][:40]), first_stage=corpus)
    report = result.metrics["hybrid"]
    saved = model_settings.load(result.output_dir).hybrid
    assert saved is not None and saved.to_dict() == report["best"]
    assert report["best_value"] >= max(report["bm25_value"], report["dense_value"]) - 0.002 or saved == EQUAL
    assert any("hybrid first stage chosen on validation" in n for n in result.notes)
    store = ChromaStore(tmp_path / "store", "premises", encoder=str(tiny_encoder))
    store.add(premises[:20])
    reranker = Reranker(str(result.output_dir))
    assert TwoStageRetriever(store, reranker).first_stage.hybrid_fusion == saved
    assert TwoStageRetriever(store, reranker, hybrid=None).first_stage.hybrid_fusion == EQUAL
    assert not preset("seed").tune_hybrid  # the original recipe tunes nothing


def test_saved_hybrid_keeps_both_sides_and_reweights_like_the_live_first_stage(tmp_path, kornli, tiny_encoder):
    """A hybrid's saved file carries its dense and BM25 rankings: replayed as saved, and after
    with_hybrid fused anew exactly as the live first stage fuses them (what lets training on the
    GPU machine, which has no store, tune the hybrid)."""
    from rag_rerank.retrieval.first_stage import EQUAL
    from rag_rerank.train.data import save_jsonl

    live = InMemoryCorpus(kornli["dev"][1], mode="hybrid", encoder=str(tiny_encoder))
    data = from_pairs(kornli["dev"][0][:30])
    path = tmp_path / "mined.jsonl.gz"
    save_jsonl(mine_hard_negatives(data, live, num_hard=1, num_random=0, candidate_k=20), path)
    loaded = load(path)
    assert all(set(g.sides) == {"dense", "bm25"} and len(g.sides["dense"]) == 20 for g in loaded.groups)
    saved = SavedCandidates(loaded, mode="hybrid")
    queries = [g.query for g in data.groups]
    texts = lambda stage, k=20: [[h.text for h in row] for row in stage.candidates_many(queries, k)]
    assert saved.reweightable and texts(saved) == [g.candidates for g in loaded.groups] == texts(live)
    for weights in (Fusion(1.0, 10.0), Fusion(0.2, 10.0), EQUAL):
        assert texts(saved.with_hybrid(weights)) == texts(live.with_hybrid(weights))
    for row, g in zip(texts(saved.with_hybrid(Fusion(1.0, 10.0))), loaded.groups):  # BM25 first, dense fills up
        assert row[: len(g.sides["bm25"])] == g.sides["bm25"] and set(row) <= {*g.sides["bm25"], *g.sides["dense"]}
    assert texts(saved) == [g.candidates for g in loaded.groups]  # with_hybrid returned a copy
    plain = SavedCandidates(loaded, mode="bm25")  # not a hybrid's file: replay only
    assert not plain.reweightable
    with pytest.raises(ValueError, match="both of its rankings"):
        plain.with_hybrid(EQUAL)
    one_sided = tmp_path / "one.jsonl"
    one_sided.write_text(json.dumps({"query": "q", "positive": "p", "candidates": ["p"], "dense": ["p"]}) + "\n",
                         encoding="utf-8")
    with pytest.raises(DataError, match="one.jsonl:1.*both dense and bm25"):
        load(one_sided)


def test_mining_progress_shows_and_mines_the_same(bm25, pairs, monkeypatch, capsys):
    from rag_rerank.train import mining

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(mining, "PROGRESS_CHUNK", 3)
    data = from_pairs(pairs)
    quiet = mining.mine_hard_negatives(data, bm25, num_hard=2, num_random=0)
    shown = mining.mine_hard_negatives(data, bm25, num_hard=2, num_random=0, progress=True)
    assert [(g.negatives, g.candidates) for g in shown.groups] == [(g.negatives, g.candidates) for g in quiet.groups]
    assert "mining" in capsys.readouterr().err


# ------------------------------------------------------------------ packed training (train/packing.py)
def _batch_grads(path, rows, pack: bool, lora: bool = False, checkpointing: bool = False):
    """Loss and every gradient of one BCE step on ``rows``, padded or packed, through the trainer's loss."""
    from sentence_transformers import CrossEncoder

    from rag_rerank.reranker.engine.packed import position_offset
    from rag_rerank.train import packing
    from rag_rerank.train.fast import PairTokenizingCollator

    torch.manual_seed(0)
    ce = CrossEncoder(str(path), num_labels=1, max_length=64, device="cpu")
    if lora:
        ce[0].model = model_setup.apply_lora(ce[0].model, 4, 8, 0.0, None)
    ce.eval()  # dropout off (the tiny models have it): the two passes must see the same network
    if checkpointing:  # recomputation runs in training mode only: train mode with every dropout at 0
        model_setup.enable_gradient_checkpointing(ce[0].model)
        ce.train()
        for m in ce.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    switched = packing.enable(ce) if pack else None
    collator = (packing.PairPackingCollator(ce.tokenizer, 64, position_offset(ce[0].model.config)) if pack
                else PairTokenizingCollator(ce.tokenizer, 64))
    batch = collator([{"query": q, "document": d, "label": float(i % 2)} for i, (q, d) in enumerate(rows)])
    if pack:
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one row, no padding
    loss = RerankerTrainer.compute_loss(None, ce, dict(batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in ce.named_parameters() if p.grad is not None}
    predicted = ce.predict([rows[0], rows[1]], convert_to_numpy=True)  # a padded call on a packed model
    if switched is not None:
        switched.restore()
    return loss.item(), grads, predicted, ce


@pytest.mark.parametrize("model", ["bert", "albert"])
def test_a_packed_batch_trains_exactly_as_a_padded_one(model, tiny_bert, tiny_ce, pairs):
    """Pairs of very different lengths (a padded batch pads most of them): the packed row gives the same loss
    and the same gradient on every weight (positions restart per pair, attention stays inside each pair,
    the head reads each pair's first token), and the switched model still scores padded calls as before."""
    path = tiny_bert if model == "bert" else tiny_ce
    rows = [(q, d * (1 + i % 4)) for i, (q, d) in enumerate(pairs[:6])] + [("짧다", "짧은 문서")]
    padded_loss, padded, padded_pred, _ = _batch_grads(path, rows, pack=False)
    packed_loss, packed, packed_pred, ce = _batch_grads(path, rows, pack=True)
    assert packed_loss == pytest.approx(padded_loss, abs=1e-6)
    assert padded.keys() == packed.keys() and len(padded) > 5
    for name in padded:
        assert torch.allclose(packed[name], padded[name], atol=1e-5, rtol=1e-4), name
    assert packed_pred == pytest.approx(padded_pred, abs=1e-6)
    assert ce[0].model.config._attn_implementation != "rag_rerank_packed_train"  # switched back


@pytest.mark.parametrize("model", ["bert", "albert"])
def test_packed_batches_under_gradient_checkpointing_match_padded(model, tiny_bert, tiny_ce, pairs):
    """The recomputed passes (transformers' for BERT, rag-rerank's own for ALBERT) get the pair boundaries too:
    a recomputation without them would attend across pairs and give other gradients."""
    rows = [(q, d * (1 + i % 3)) for i, (q, d) in enumerate(pairs[:5])]
    path = tiny_bert if model == "bert" else tiny_ce
    padded_loss, padded, _, _ = _batch_grads(path, rows, pack=False, checkpointing=True)
    packed_loss, packed, _, _ = _batch_grads(path, rows, pack=True, checkpointing=True)
    assert packed_loss == pytest.approx(padded_loss, abs=1e-6) and padded.keys() == packed.keys()
    assert all(torch.allclose(packed[n], padded[n], atol=1e-5, rtol=1e-4) for n in padded)


def test_packed_lora_batch_matches_padded(tiny_bert, pairs):
    rows = [(q, d * (1 + i % 3)) for i, (q, d) in enumerate(pairs[:5])]
    padded_loss, padded, _, _ = _batch_grads(tiny_bert, rows, pack=False, lora=True)
    packed_loss, packed, _, _ = _batch_grads(tiny_bert, rows, pack=True, lora=True)
    assert packed_loss == pytest.approx(padded_loss, abs=1e-6) and padded.keys() == packed.keys()
    assert all(torch.allclose(packed[n], padded[n], atol=1e-5, rtol=1e-4) for n in padded)


def test_pack_setting_says_where_batches_pack(tiny_bert, tiny_ce):
    from transformers import AutoModelForSequenceClassification, DebertaV2Config, DebertaV2ForSequenceClassification

    from rag_rerank.train.packing import packs

    bert = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    cpu = torch.device("cpu")
    assert packs(None, bert, cpu, False)[0] is False  # auto: the flash kernel only
    assert packs(True, bert, cpu, False) == (True, "packed batches: no padding, attention in a per-pair loop "
                                                   "(no flash kernel here)")
    assert packs(False, bert, cpu, True)[0] is False
    deberta = DebertaV2ForSequenceClassification(DebertaV2Config(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                                 num_attention_heads=2, intermediate_size=16))
    pack, why = packs(True, deberta, cpu, False)
    assert not pack and "deberta-v2" in why
    assert preset("seed").pack is False and preset("fast").pack is None  # the original recipe never packs


def test_packed_training_runs_evaluates_and_saves_an_ordinary_model(tiny_bert, tmp_path, pairs, bm25):
    cfg = tiny_config("fast", tiny_bert, tmp_path, pack=True, learning_rate=1e-2)
    result = train(cfg, from_pairs(pairs), first_stage=bm25)
    out = result.output_dir
    assert any(n.startswith("packed batches") for n in result.notes)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 4
    assert any("eval_val_ndcg@10" in h for h in metrics["history"])  # the padded evaluator ran mid-training
    assert any("eval_loss" in h for h in metrics["history"])  # and the packed eval loss
    assert "rag_rerank" not in (out / "config.json").read_text()  # saved as an ordinary model
    r = Reranker(str(out), pack=False)
    assert r.score("질문", ["문서", "다른 문서"]) == pytest.approx(Reranker(str(out)).score("질문", ["문서", "다른 문서"]),
                                                                abs=1e-5)
    seed_like = train(tiny_config("fast", tiny_bert, tmp_path / "no", pack=True, pretokenize=False), from_pairs(pairs))
    assert any("pack true needs pretokenize" in n for n in seed_like.notes)
