"""The `rag-rerank` console script."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rag_rerank import Reranker
from rag_rerank.train import load


def run_cli(*args, stdin=None) -> subprocess.CompletedProcess:
    """`rag-rerank ARGS` through the console script's own ``main``, in this process: the same parser,
    commands and exit codes without paying a fresh interpreter's torch import per call (the console
    script itself runs as a subprocess in test_console_script_* below)."""
    from rag_rerank.cli import run

    code, out, err = run(list(args), stdin or "")
    return subprocess.CompletedProcess(["rag-rerank", *args], code, out, err)


def run_console_script(*args, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rag_rerank.cli", *args], capture_output=True,
                          text=True, input=stdin, timeout=600)


@pytest.mark.slow
def test_public_imports():
    out = subprocess.run([sys.executable, "-c",
                          "from rag_rerank import Reranker; from rag_rerank.models import materialize"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_console_script_rerank_json(tiny_ce):
    out = run_console_script("rerank", "서울 날씨", "--model", str(tiny_ce), "--json", stdin="오늘 서울은 맑다\n부산은 비\n")
    assert out.returncode == 0, out.stderr
    ranked = json.loads(out.stdout)
    assert sorted(r["index"] for r in ranked) == [0, 1]
    assert ranked[0]["score"] >= ranked[1]["score"]


def test_rerank_command_reads_stdin(tiny_ce):
    out = run_cli("rerank", "서울 날씨", "--model", str(tiny_ce), "--top-n", "1", stdin="오늘 서울은 맑다\n\n부산은 비\n")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1 and out.stdout.split("  ")[1].startswith("[")


def test_rerank_command_indexes_stdin_documents_by_their_line(tiny_ce):
    """A blank stdin line is no document but keeps its number: "index" is the line a caller would look up
    (it was the position among non-blank lines, pointing at the wrong line after a blank one). No documents
    at all is an error, not an empty answer."""
    out = run_cli("rerank", "서울 날씨", "--reranker", str(tiny_ce), "--json", stdin="오늘 서울은 맑다\r\n\n부산은 비\n")
    assert out.returncode == 0, out.stderr
    by_index = {r["index"]: r["text"] for r in json.loads(out.stdout)}
    assert by_index == {0: "오늘 서울은 맑다", 2: "부산은 비"}
    for stdin in ("", "\n  \n", "\ufeff\n"):
        out = run_cli("rerank", "서울 날씨", "--model", str(tiny_ce), stdin=stdin)
        assert out.returncode == 2 and "no documents" in out.stderr and not out.stdout
    # a file saved as "UTF-8 with BOM" (Notepad, Excel): the mark is not part of the first document
    out = run_cli("rerank", "서울 날씨", "--model", str(tiny_ce), "--json", stdin="\ufeff오늘 서울은 맑다\n부산은 비\n")
    assert {r["index"]: r["text"] for r in json.loads(out.stdout)} == {0: "오늘 서울은 맑다", 1: "부산은 비"}


def test_rerank_command_takes_documents_after_its_options(tiny_ce):
    """`rerank "q" --top-n 2 d1 d2` was refused ("unrecognized arguments: d1 d2"): argparse had filled the
    documents before the options. Documents keep their order wherever they stand; "--" lets one start with "-";
    an unknown option is still refused."""
    out = run_cli("rerank", "서울", "가 문서", "--reranker", str(tiny_ce), "--json", "나 문서", "--", "-다 문서")
    assert out.returncode == 0, out.stderr
    assert {r["index"]: r["text"] for r in json.loads(out.stdout)} == {0: "가 문서", 1: "나 문서", 2: "-다 문서"}
    out = run_cli("rerank", "서울", "가 문서", "--reranker", str(tiny_ce), "--bogus", "나 문서")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr


@pytest.mark.slow
def test_console_script_missing_model_is_a_clean_error():
    out = run_console_script("rerank", "질문", "문서", "--model", "./nope/model")
    assert out.returncode == 1  # a runtime error; 2 is for usage
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_materialize_command(model_home, e5_dir):
    out = run_cli("materialize")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(e5_dir)


def test_index_and_search_commands(tmp_path, model_home, e5_dir, tiny_ce):
    src = tmp_path / "docs.jsonl"
    rows = [{"text": "서울은 대한민국의 수도이다.", "metadata": {"topic": "geo"}},
            {"text": "김치는 발효 음식이다.", "metadata": {"topic": "food"}},
            {"text": "부산은 항구 도시이다.", "metadata": {"topic": "geo"}, "id": "busan"}]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    store = str(tmp_path / "store")
    common = ["--store", store, "--encoder", "offline:multilingual-e5-small"]
    out = run_cli("index", str(src), *common)
    assert out.returncode == 0, out.stderr
    assert "(3 added, 0 removed, 0 unchanged)" in out.stdout
    again = run_cli("index", str(src), *common)
    assert "(0 added, 0 removed, 3 unchanged)" in again.stdout and "now holds 3" in again.stdout
    # reading commands refuse a store or collection that is not there (and create nothing)
    out = run_cli("search", "서울", "--store", str(tmp_path / "typo"), "--mode", "bm25")
    assert out.returncode == 1 and "no store there" in out.stderr and not (tmp_path / "typo").exists()
    out = run_cli("search", "서울", *common, "--collection", "typo", "--mode", "bm25")
    assert out.returncode == 1 and "no collection 'typo'" in out.stderr and "rag_rerank" in out.stderr

    for mode in ("dense", "bm25", "hybrid"):
        out = run_cli("search", "한국의 수도는?", "--store", store, "--mode", mode, "--no-rerank", "--json", "-k", "2")
        assert out.returncode == 0, out.stderr
        hits = json.loads(out.stdout)
        assert hits[0]["text"] == "서울은 대한민국의 수도이다.", mode
        assert hits[0]["rerank_score"] is None

    out = run_cli("search", "항구", "--store", store, "--reranker", str(tiny_ce), "--json", "--where", '{"topic": "geo"}')
    hits = json.loads(out.stdout)
    assert {h["text"] for h in hits} == {"서울은 대한민국의 수도이다.", "부산은 항구 도시이다."}
    assert all(h["rerank_score"] is not None for h in hits)

    # a model carrying known queries: their document joins even where the first stage found nothing,
    # labelled as such, and a --where filter holds for it too
    import shutil

    from rag_rerank.retrieval.fusion import Fusion
    from rag_rerank.retrieval.known_queries import KnownQueries

    model = tmp_path / "known-model"
    shutil.copytree(tiny_ce, model)
    KnownQueries([("오늘 점심 메뉴 추천", ["서울은 대한민국의 수도이다."])], Fusion(1.0, 10.0, 5)).save(model)
    ask = ["search", "오늘 점심 메뉴 추천해줘", "--store", store, "--mode", "bm25", "--reranker", str(model)]
    out = run_cli(*ask, "--where", '{"topic": "geo"}')
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "1. known query  서울은 대한민국의 수도이다."
    out = run_cli(*ask, "--where", '{"topic": "food"}')
    assert out.returncode == 0 and "서울" not in out.stdout

    out = run_cli("search", "항구", "--store", store, "--mode", "sparse")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_index_rejects_bad_jsonl_with_line_number(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "좋은 줄"}\n{"txt": "나쁜 줄"}\n', encoding="utf-8")
    out = run_cli("index", str(src), "--store", str(tmp_path / "s"))
    assert out.returncode == 1 and "bad.jsonl:2" in out.stderr


def kornli_task_files(tmp_path, kornli, n_train: int, n_test: int):
    """train.jsonl (first n_train dev pairs), test.jsonl (n_test pairs from 140 on), corpus.txt (premises)."""
    pairs, premises = kornli["dev"]
    assert n_train <= 140 and 140 + n_test <= len(pairs)
    paths = tmp_path / "train.jsonl", tmp_path / "test.jsonl", tmp_path / "corpus.txt"
    for path, part in zip(paths[:2], (pairs[:n_train], pairs[140 : 140 + n_test])):
        path.write_text("\n".join(json.dumps({"query": h, "positive": p}, ensure_ascii=False) for h, p in part),
                        encoding="utf-8")
    paths[2].write_text("\n".join(premises), encoding="utf-8")
    return paths


def test_eval_says_which_queries_no_system_can_answer(tmp_path):
    """A positive that is not a text of the corpus searched scores as a miss in every row: said on stderr
    (how many, the first such query), so a mismatch between data and corpus is not read as a weak model."""
    data, corpus = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    data.write_text('{"query": "서울", "positives": ["서울은 수도"]}\n{"query": "부산", "positives": ["없는 문서"]}\n',
                    encoding="utf-8")
    corpus.write_text('{"text": "서울은 수도"}\n{"text": "부산은 항구"}\n', encoding="utf-8")
    out = run_cli("eval", "--data", str(data), "--corpus", str(corpus), "--mode", "bm25", "--json")
    assert out.returncode == 0, out.stderr
    assert "1 of 2 queries" in out.stderr and "'부산'" in out.stderr
    assert json.loads(out.stdout)[0]["MRR@10"] == 0.5
    data.write_text('{"query": "서울", "positives": ["서울은 수도"]}\n', encoding="utf-8")
    assert "no positive" not in run_cli("eval", "--data", str(data), "--corpus", str(corpus), "--mode", "bm25").stderr


def test_eval_counts_a_query_once_whatever_rows_name_its_documents(tmp_path):
    """One row per relevant document (qrels) or (query, document, label) rows: a query is one query, every
    document labelled >= 0.5 relevant. It was scored as two queries (MRR 0.83 for a perfect ranking), and
    labelled rows were refused as having no positives."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("서울은 대한민국의 수도\n서울 특별시 청사\n부산은 항구\n김치는 발효 음식\n", encoding="utf-8")
    qrels = tmp_path / "q.csv"
    qrels.write_text("query,document\n서울 수도?,서울은 대한민국의 수도\n김치?,김치는 발효 음식\n"
                     "서울 수도?,서울 특별시 청사\n", encoding="utf-8")
    labelled = tmp_path / "l.csv"
    labelled.write_text("query,document,label\n서울 수도?,서울은 대한민국의 수도,1\n서울 수도?,부산은 항구,0\n"
                        "부산?,김치는 발효 음식,0\n김치?,김치는 발효 음식,1\n", encoding="utf-8")
    for data, left_out in ((qrels, False), (labelled, True)):
        out = run_cli("eval", "--data", str(data), "--corpus", str(corpus), "--mode", "bm25", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)[0]["MRR@10"] == 1.0
        assert ("1 queries in" in out.stderr and "left out" in out.stderr) == left_out


def test_index_says_when_documents_are_longer_than_the_encoder_window(tmp_path, tiny_encoder):
    """A folder of long files indexes one document a file; past the encoder's window dense search sees only
    each one's start. `index` says how many, as its own stderr line."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "long.md").write_text("서울은 대한민국의 수도이다. " * 300, encoding="utf-8")
    (folder / "short.md").write_text("부산은 항구 도시", encoding="utf-8")
    out = run_cli("index", str(folder), "--store", str(tmp_path / "db"), "--encoder", str(tiny_encoder), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "rag-rerank index: warning: 1 of 2 documents are longer than the encoder's" in out.stderr


def test_train_and_eval_commands(tmp_path, model_home, e5_dir, tiny_ce, kornli):
    train_file, test_file, corpus = kornli_task_files(tmp_path, kornli, n_train=120, n_test=40)
    out = run_cli("train", "--data", str(train_file), "--base", str(tiny_ce), "--output", str(tmp_path / "model"),
                  "--preset", "fast", "--max-steps", "4", "--set", "eval_steps=2", "--set", "save_steps=2",
                  "--set", "dataloader_workers=0", "--corpus", str(corpus), "--mode", "bm25", "--max-length", "96")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "+ fine-tuned" in out.stdout and "first stage (bm25, top 30)" in out.stdout
    out = run_cli("eval", "--data", str(test_file), "--corpus", str(corpus), "--mode", "bm25",
                  "--reranker", str(tmp_path / "model"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert [r["system"] for r in rows][:2] == ["bm25 (top 50)", f"+ {tmp_path / 'model'}"]
    from rag_rerank import model_settings
    from rag_rerank.retrieval.known_queries import KnownQueries

    fusion = model_settings.load(tmp_path / "model").fusion
    # a tuned fusion adds its row; known queries two (over the first stage, over the pipeline)
    assert len(rows) == 2 + (not fusion.is_plain) + 2 * (KnownQueries.load(tmp_path / "model") is not None)
    assert all(0 <= r["MRR@10"] <= 1 for r in rows)
    kiwi, naive = (json.loads(run_cli("eval", "--data", str(test_file), "--corpus", str(corpus), "--mode", "bm25",
                                      "--bm25-tokenizer", tok, "--json").stdout)[0] for tok in ("kiwi", "whitespace"))
    assert naive["system"] == "bm25 (whitespace) (top 50)" and kiwi["MRR@10"] > naive["MRR@10"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n', encoding="utf-8")
    out = run_cli("train", "--data", str(bad), "--base", str(tiny_ce), "--output", str(tmp_path / "m2"))
    assert out.returncode == 1 and "bad.jsonl:2" in out.stderr


def test_mine_then_train_and_eval_from_saved_candidates(tmp_path, model_home, e5_dir, tiny_ce, kornli, data_dir):
    """The split workflow: first stage on one machine (mine, eval --save-candidates), training and
    reranking from the files on another, with no store or corpus there."""
    train_file, test_file, corpus = kornli_task_files(tmp_path, kornli, n_train=100, n_test=30)
    mined = tmp_path / "train.mined.jsonl.gz"
    out = run_cli("mine", "--data", str(train_file), "--corpus", str(corpus), "--mode", "bm25", "--output", str(mined),
                  "--num-hard", "3", "--num-random", "1", "--candidate-k", "12")
    assert out.returncode == 0, out.stderr[-2000:]
    groups = load(mined).groups
    assert len(groups) == 100
    for g in groups:
        assert not set(g.negatives) & set(g.positives)
        hard = [c for c in g.candidates if c not in g.positives][:3]  # BM25 may find fewer than 12 matches
        assert 0 < len(g.candidates) <= 12 and g.negatives[: len(hard)] == hard and len(g.negatives) == len(hard) + 1
    remined = tmp_path / "train.remined.jsonl.gz"  # other counts, from the saved rankings alone
    out = run_cli("mine", "--data", str(train_file), "--candidates", str(mined), "--num-hard", "1", "--num-random",
                  "2", "--output", str(remined))
    assert out.returncode == 0, out.stderr[-2000:]
    for before, after in zip(groups, load(remined).groups):
        first = [c for c in before.candidates if c not in before.positives][:1]
        assert after.candidates == before.candidates and after.negatives[: len(first)] == first
        assert len(after.negatives) == len(first) + 2 and not set(after.negatives) & set(after.positives)
    auto = tmp_path / "train.auto.jsonl.gz"  # counts left to the recipe: chosen from the first stage's score
    out = run_cli("mine", "--data", str(train_file), "--candidates", str(mined), "--output", str(auto))
    assert out.returncode == 0, out.stderr[-2000:]
    import re

    from rag_rerank.train.mining import default_mix

    found = re.search(r"first stage MRR@10 ([0-9.]+) on 100 queries, .*: (\d+) hard \+ (\d+) random", out.stdout)
    assert found, out.stdout
    hard, rand = int(found[2]), int(found[3])
    assert (hard, rand) == default_mix(float(found[1]))
    for before, after in zip(groups, load(auto).groups):
        first = [c for c in before.candidates if c not in before.positives][:hard]
        assert after.negatives[: len(first)] == first and len(after.negatives) == len(first) + rand
    saved = tmp_path / "test.bm25.jsonl.gz"
    live = json.loads(run_cli("eval", "--data", str(test_file), "--corpus", str(corpus), "--mode", "bm25", "--json",
                              "--save-candidates", str(saved)).stdout)
    assert all(0 < len(g.candidates) <= 50 for g in load(saved).groups)

    sts = data_dir / "korsts" / "sts-dev.tsv"  # another task's scored pairs, mixed into training only
    out = run_cli("train", "--data", str(mined), "--base", str(tiny_ce), "--output", str(tmp_path / "model"),
                  "--max-steps", "4", "--batch-size", "8", "--set", "eval_steps=2", "--set", "save_steps=2",
                  "--set", "dataloader_workers=0", "--mode", "bm25", "--max-length", "96", "--extra-data", str(sts))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "first stage (bm25, top 30)" in out.stdout and "fusion chosen on validation" in out.stdout
    assert (tmp_path / "model" / "rag_rerank.json").exists()
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text(encoding="utf-8"))
    import re

    taken = int(re.search(rf"{re.escape(str(sts))}: (\d+) of 300 rows", " ".join(metrics["notes"]))[1])
    primary_rows = metrics["train"]["pairs"] - taken  # the mined queries left after carving validation
    assert 0 < taken <= primary_rows < sum(1 + len(g.negatives) for g in groups)
    assert f"extra training data {sts}" in (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    out = run_cli("train", "--data", str(mined), "--base", str(tiny_ce), "--output", str(tmp_path / "m3"),
                  "--extra-data", str(train_file))  # queries with positives only: nothing to learn to rank against
    assert out.returncode == 1 and "no negatives" in out.stderr and "rag-rerank mine" in out.stderr

    rows = json.loads(run_cli("eval", "--data", str(saved), "--reranker", str(tmp_path / "model"), "--json").stdout)
    assert rows[0]["system"] == "first stage (saved candidates, top 50)"
    assert {k: rows[0][k] for k in ("MRR@10", "R@10")} == {k: live[0][k] for k in ("MRR@10", "R@10")}
    assert rows[1]["system"] == f"+ {tmp_path / 'model'}"
    out = run_cli("eval", "--data", str(test_file), "--reranker", str(tmp_path / "model"))
    assert out.returncode == 2 and "candidates" in out.stderr  # neither a corpus nor saved candidates


def test_hybrid_tuned_from_saved_rankings_is_what_eval_measures(tmp_path, tiny_ce, tiny_encoder, kornli):
    """The split workflow with a hybrid: mine and eval --save-candidates keep both sides, training
    from the files alone tunes BM25's share on validation and saves it, and eval of that model on
    the saved test rankings reports (and reranks) its own hybrid, equal to searching live with it."""
    from rag_rerank import model_settings

    train_file, test_file, corpus = kornli_task_files(tmp_path, kornli, n_train=120, n_test=30)
    mined, saved = tmp_path / "train.mined.jsonl.gz", tmp_path / "test.hybrid.jsonl.gz"
    first_stage = ["--corpus", str(corpus), "--mode", "hybrid", "--encoder", str(tiny_encoder)]
    assert run_cli("mine", "--data", str(train_file), *first_stage, "--output", str(mined)).returncode == 0
    out = run_cli("eval", "--data", str(test_file), *first_stage, "--json", "--save-candidates", str(saved))
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(set(g.sides) == {"dense", "bm25"} for g in load(saved).groups)

    model = tmp_path / "model"
    out = run_cli("train", "--data", str(train_file), "--candidates", str(mined), "--corpus", str(corpus), "--mode",
                  "hybrid", "--base", str(tiny_ce), "--output", str(model), "--max-steps", "2", "--batch-size", "8",
                  "--set", "eval_steps=1", "--set", "save_steps=1", "--set", "dataloader_workers=0",
                  "--max-length", "64", "--set", "known_queries=false")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "hybrid first stage chosen on validation" in out.stdout
    # the tiny encoder's dense side is random: the tuner leans on BM25
    tuned = model_settings.load(model).hybrid
    assert tuned is not None and tuned.weight > 0.5

    rows = json.loads(run_cli("eval", "--data", str(saved), "--candidates", str(saved), "--mode", "hybrid",
                              "--reranker", str(model), "--json", "--max-length", "64").stdout)
    own = f"hybrid {tuned.describe()}, {model}'s (top 50)"
    assert [r["system"] for r in rows][:3] == ["hybrid (top 50)", own, f"+ {model}"]
    live = json.loads(run_cli("eval", "--data", str(test_file), *first_stage, "--json").stdout)[0]
    assert rows[0]["MRR@10"] == live["MRR@10"]  # replayed as saved
    from rag_rerank.retrieval.first_stage import InMemoryCorpus
    from rag_rerank.evaluate import first_stage_row

    groups = load(test_file).groups
    relive = InMemoryCorpus(corpus.read_text(encoding="utf-8").splitlines(), encoder=str(tiny_encoder))
    expected = first_stage_row(relive.with_hybrid(tuned), groups, 50, "live")[0]
    assert rows[1]["MRR@10"] == pytest.approx(expected.metrics["MRR@10"])  # the model's own hybrid, live
    equal = json.loads(run_cli("eval", "--data", str(saved), "--candidates", str(saved), "--mode", "hybrid",
                               "--reranker", str(model), "--json", "--max-length", "64", "--hybrid", "equal").stdout)
    assert [r["system"] for r in equal][:2] == ["hybrid (top 50)", f"+ {model}"]


@pytest.mark.slow
def test_train_under_torchrun_two_processes(tmp_path, tiny_ce, kornli):
    """The multi-GPU path on CPU (gloo): the same command under torchrun trains with DDP, rank 0
    writes the model and report, the other rank exits cleanly (it once failed reading rank 0's
    report). On GPUs: BENCHMARKS.md, Multi-GPU."""
    train_file, _, corpus = kornli_task_files(tmp_path, kornli, n_train=140, n_test=0)  # validation: 28 queries
    out_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rag_rerank.cli",
           "train", "--data", str(train_file), "--base", str(tiny_ce), "--output", str(out_dir), "--max-steps", "3",
           "--batch-size", "4", "--max-length", "64", "--set", "dataloader_workers=0", "--set", "show_progress=false",
           "--set", "validation_fraction=0.2", "--set", "validation_min_queries=0", "--set", "eval_steps=2",
           "--set", "save_steps=2", "--device", "cpu", "--corpus", str(corpus), "--mode", "bm25"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 1: trained 3 steps" in out.stdout
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and (out_dir / "report.md").exists()
    assert any("distributed run" in n for n in metrics["notes"])  # best model by eval loss, said aloud
    assert "first stage (bm25, top 30)" in out.stdout  # rank 0's validation table after training


def chatbot_task_files(tmp_path, data_dir, n_rows: int = 900):
    """A small Q->A task: every 5th row's question is a test query, the answers the corpus."""
    import csv

    train, test, answers = {}, {}, []
    with (data_dir / "chatbot" / "ChatbotData.csv").open(encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= n_rows:
                break
            answers.append(row["A"])
            (test if i % 5 == 4 else train).setdefault(row["Q"], []).append(row["A"])
    paths = tmp_path / "qa_train.jsonl", tmp_path / "qa_test.jsonl", tmp_path / "answers.txt"
    for path, part in zip(paths[:2], (train, {q: a for q, a in test.items() if q not in train})):
        path.write_text("\n".join(json.dumps({"query": q, "positives": a}, ensure_ascii=False)
                                  for q, a in part.items()), encoding="utf-8")
    paths[2].write_text("\n".join(dict.fromkeys(answers)), encoding="utf-8")
    return paths


def test_known_queries_from_train_to_eval(tmp_path, data_dir, tiny_ce):
    """Q->A data: `rag-rerank train` keeps the training questions with the model when validation
    shows their answers help, and `rag-rerank eval` reports them fused in - the same numbers from
    a live corpus and from saved candidates plus that corpus."""
    train_file, test_file, corpus = chatbot_task_files(tmp_path, data_dir)
    model = tmp_path / "model"
    out = run_cli("train", "--data", str(train_file), "--base", str(tiny_ce), "--output", str(model),
                  "--max-steps", "2", "--batch-size", "8", "--set", "eval_steps=2", "--set", "save_steps=2",
                  "--set", "dataloader_workers=0", "--corpus", str(corpus), "--mode", "bm25", "--max-length", "64")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "known queries chosen on validation: w=" in out.stdout  # switched on
    saved = json.loads((model / "rag_rerank.json").read_text())["known_queries"]
    metrics = json.loads((model / "metrics.json").read_text())
    assert saved["weight"] > 0 and metrics["known_queries"]["best_value"] > metrics["known_queries"]["pipeline_value"]
    assert saved["queries"] == len(load(train_file).groups)  # kept: training and validation queries alike
    assert any("+ known queries" in name for name in metrics["validation"])

    candidates = tmp_path / "qa_test.bm25.jsonl.gz"
    live = json.loads(run_cli("eval", "--data", str(test_file), "--corpus", str(corpus), "--mode", "bm25",
                              "--reranker", str(model), "--json", "--save-candidates", str(candidates)).stdout)
    names = [r["system"] for r in live]
    first, pipeline = live[names.index(next(n for n in names if n.startswith("first stage +")))], live[-1]
    assert "known queries" in pipeline["system"] and first["MRR@10"] > live[0]["MRR@10"] + 0.05
    replayed = json.loads(run_cli("eval", "--data", str(candidates), "--candidates", str(candidates), "--corpus",
                                  str(corpus), "--mode", "bm25", "--reranker", str(model), "--json").stdout)
    assert [r["MRR@10"] for r in replayed] == pytest.approx([r["MRR@10"] for r in live])
    off = json.loads(run_cli("eval", "--data", str(candidates), "--candidates", str(candidates), "--mode", "bm25",
                             "--reranker", str(model), "--json", "--known-queries", "none").stdout)
    assert len(off) == len(live) - 2 and not any("known queries (" in r["system"] for r in off)
    # evaluated on the queries it was trained and validated on: said, with the count (the model keeps them)
    trained = {g.query for g in load(train_file).groups}
    for data in (train_file, test_file):
        asked = {g.query for g in load(data).groups}
        said = run_cli("eval", "--data", str(data), "--corpus", str(corpus), "--mode", "bm25", "--reranker",
                       str(model), "--json", "--known-queries", "none").stderr
        seen = len(asked & trained)
        assert (f"warning: {seen} of {len(asked)} queries in {data} are queries" in said) == (seen > 0)
        assert seen == len(asked) if data == train_file else seen < len(asked)


def test_index_replaces_an_edited_source_and_sync_drops_vanished_ones(tmp_path, tiny_encoder):
    rows = [{"text": "서울은 대한민국의 수도이다."}, {"text": "부산은 항구 도시이다."}, {"text": "인천에는 공항이 있다."}]
    src = tmp_path / "docs.jsonl"
    write = lambda rs: src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rs), encoding="utf-8")  # noqa: E731
    write(rows)
    common = ["--store", str(tmp_path / "store"), "--encoder", str(tiny_encoder)]
    assert "now holds 3 (3 added, 0 removed, 0 unchanged)" in run_cli("index", str(src), *common).stdout
    write(rows[:2] + [{"text": "부산은 대한민국 제2의 도시이다."}])  # one row edited
    out = run_cli("index", str(src), *common)
    assert "now holds 3 (1 added, 1 removed, 2 unchanged)" in out.stdout, out.stdout
    other = tmp_path / "other.txt"
    other.write_text("대구는 분지이다.\n", encoding="utf-8")
    assert "now holds 4" in run_cli("index", str(other), *common).stdout
    out = run_cli("index", str(src), *common, "--sync")  # other.txt is not in this source: it goes
    assert "now holds 3 (0 added, 1 removed, 3 unchanged)" in out.stdout, out.stdout
    twin = tmp_path / "twin" / "docs.jsonl"  # another file of the same name is another source
    twin.parent.mkdir()
    twin.write_text(json.dumps(rows[0], ensure_ascii=False), encoding="utf-8")
    assert "now holds 4 (1 added, 0 removed, 0 unchanged)" in run_cli("index", str(twin), *common).stdout


def test_backend_flags_run_the_bi_encoder_and_the_reranker_on_a_cpu_backend(tmp_path, tiny_encoder, tiny_ce):
    """`--backend openvino|onnx` (and `--threads`) reach every model a command loads: the store's
    bi-encoder when indexing and searching, the reranker when searching and reranking; the rankings
    match torch's. `--threads` without a CPU backend is a usage error, not a silently ignored flag."""
    import shutil

    enc, ce = shutil.copytree(tiny_encoder, tmp_path / "enc"), shutil.copytree(tiny_ce, tmp_path / "ce")
    rows = ["서울은 대한민국의 수도이다.", "김치는 배추로 담그는 발효 음식이다.", "부산은 항구 도시이다.", "한라산은 제주도에 있다."]
    src = tmp_path / "docs.txt"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    store = ["--store", str(tmp_path / "store"), "--encoder", str(enc)]
    out = run_cli("index", str(src), *store, "--backend", "openvino", "--threads", "1")
    assert out.returncode == 0 and "now holds 4" in out.stdout, out.stderr
    assert (enc / "onnx").is_dir()  # the bi-encoder ran exported
    search = ["search", "한국의 수도", *store, "--mode", "dense", "--json", "-k", "4"]
    dense = {b: json.loads(run_cli(*search, "--no-rerank", "--backend", b).stdout) for b in ("torch", "openvino")}
    assert [h["text"] for h in dense["openvino"]] == [h["text"] for h in dense["torch"]]
    reranked = {b: json.loads(run_cli(*search, "--reranker", str(ce), "--backend", b).stdout)
                for b in ("torch", "onnx")}
    assert (ce / "onnx").is_dir()  # the reranker ran exported too
    by_text = {h["text"]: h["rerank_score"] for h in reranked["torch"]}
    assert all(abs(h["rerank_score"] - by_text[h["text"]]) < 1e-4 for h in reranked["onnx"])
    out = run_cli("rerank", "서울", *rows, "--model", str(ce), "--backend", "onnx", "--json")
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 4, out.stderr
    out = run_cli("index", str(src), *store, "--threads", "2", "--backend", "torch")
    assert out.returncode == 2 and "--threads sets --backend onnx/openvino's threads" in out.stderr
    out = run_cli("index", str(src), *store, "--threads", "2")  # auto, and the suite pins it to torch: refused too
    assert out.returncode == 1 and "threads sets the CPU backends' threads" in out.stderr


def test_version_flag_and_typed_distributions(capsys):
    from pathlib import Path

    import rag_rerank
    from rag_rerank import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"rag-rerank {rag_rerank.__version__}"
    root = Path(rag_rerank.__file__).resolve().parent
    integrations = root.parent / "integrations"
    for package in (root, integrations / "langchain-rag-rerank" / "langchain_rag_rerank",
                    *sorted((integrations / "llama-index-rag-rerank" / "llama_index").glob("*/rag_rerank"))):
        assert (package / "py.typed").exists(), package
