"""bench/quality.py end to end on CPU with small settings (issue 6's smoke version; not its targets).

Runs the user's commands - rag-rerank index, mine, eval --save-candidates, train (default
recipe), eval of base + fine-tuned rerankers - on a few Korean queries per task and checks the
report has every row it promises. Tiny models stand in for e5 (bi-encoder and base): what is
tested is the bench's plumbing; the real models' numbers are BENCHMARKS.md's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
sys.path.insert(0, str(BENCH.parent))


@pytest.mark.slow
def test_quality_bench_smoke_runs_the_user_commands_end_to_end(model_home, tiny_ce, tiny_encoder, data_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_RERANK_DATA": str(data_dir)}
    out = subprocess.run([sys.executable, str(BENCH), "all", "--smoke", "--work", str(tmp_path), "--seeds", "1",
                          "--tasks", "korquad", "--base", str(tiny_ce), "--encoder", str(tiny_encoder), "--in-process"],
                         capture_output=True, text=True, timeout=2400, env=env)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    report = (tmp_path / "quality.md").read_text(encoding="utf-8")
    # one task keeps CI short: korquad, whose own validation part (whole articles) goes to training as
    # --eval-data; kornli and chatbot run the same code with a validation carved by rag-rerank train
    for task in ("korquad",):
        log = (tmp_path / task / "commands.log").read_text(encoding="utf-8")
        for command in ("rag-rerank index", "rag-rerank mine", "rag-rerank eval", "rag-rerank train"):
            assert command in log, (task, command)
        prep = json.loads((tmp_path / task / "prepare.json").read_text())
        assert set(prep["first_stage"]) == {"bm25-whitespace", "bm25-kiwi", "dense", "hybrid"}
        assert prep["validation_queries"] > 0 and "--eval-data" in log  # the validation articles, not a carve
        paragraphs = {part: {d for line in (tmp_path / task / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()
                             for d in json.loads(line)["positives"]} for part in ("train", "validation", "test")}
        assert paragraphs["test"] and not paragraphs["train"] & (paragraphs["test"] | paragraphs["validation"])
        rer = json.loads((tmp_path / task / "rerank.json").read_text())
        assert set(rer["reranked"]) == set(prep["first_stage"])
        model = Path(rer["models"][0])
        assert (model / "rag_rerank.json").exists()  # fusion tuned on validation, saved with the model
        assert rer["train"]["seed1"]["base_model"] == str(tiny_ce) == rer["base"]
        for row in (r for stage in rer["reranked"].values() for r in stage["rows"]):
            assert 0.0 <= row["MRR@10"] <= 1.0 and row["seconds"] >= 0
        assert f"### {task}:" in report
    assert report.count("| hybrid | **default pipeline**") == 1
    assert report.count("| hybrid | base model, not fine-tuned |") == 1
    assert "**Targets**" in report


def _prepared_task(d: Path, first_stages: dict) -> Path:
    """A task directory as `quality.py prepare` leaves it: prepare.json with these first stages."""
    d.mkdir()
    (d / "prepare.json").write_text(json.dumps({"test_queries": 9, "test_corpus": 20, "train_queries": 30,
                                                "train_corpus": 20, "first_stage": first_stages,
                                                "prepare_seconds": {"index": 1.0}}))
    return d


def _eval_row(system: str, mrr: float) -> dict:
    """One `rag-rerank eval --json` row, every metric at ``mrr``."""
    return {"system": system, "MRR@10": mrr, "NDCG@10": mrr, "R@1": mrr, "R@10": mrr, "seconds": 2.0}


def test_report_default_pipeline_takes_each_models_known_queries_row(tmp_path):
    """The default pipeline is what TwoStageRetriever runs with each model: fused with its known
    queries where training switched them on, its fusion alone where not."""
    import quality

    first = {n: {"MRR@10": 0.05 + i / 100, "NDCG@10": 0.1, "R@1": 0.0, "R@10": 0.2, "seconds": 1.0}
             for i, n in enumerate(quality.FIRST_STAGES)}  # hybrid best: 0.08, target 0.11
    d = _prepared_task(tmp_path / "chatbot", first)
    row = _eval_row

    m1, m2 = "w/models/seed1", "w/models/seed2"
    rows = [row("hybrid (top 50)", 0.08), row(f"+ {quality.BASE}", 0.01), row(f"+ {m1}", 0.06),
            row(f"+ {m1}, fused w=0.5 k=2 on all candidates", 0.09),
            row(f"first stage + {m1}'s known queries (w=0.6 k=2 top 20)", 0.2),
            row(f"+ {m1}, fused w=0.5 k=2 on all candidates, + known queries (w=0.6 k=2 top 20)", 0.25),
            row(f"+ {m2}", 0.07), row(f"+ {m2}, fused w=0.4 k=2 on all candidates", 0.1)]
    train = {"steps": 10, "device": "cpu"}
    (d / "rerank.json").write_text(json.dumps({
        "seeds": [1, 2], "models": [m1, m2], "device": "CPU",
        "train": {f"seed{s}": {"seconds": 1, "train": train, "base_model": quality.BASE, "fusion": None,
                               "known_queries": {"weight": 0.6, "rrf_k": 2, "depth": 20, "queries": 30} if s == 1
                               else {"weight": 0.0}} for s in (1, 2)},
        "reranked": {n: {"rows": rows} for n in quality.FIRST_STAGES}}))
    text = quality.report(tmp_path, ["chatbot"])
    assert "| hybrid | fine-tuned + fusion | 0.0900 / 0.1000 |" in text
    assert "| hybrid | known queries only (no reranker) | 0.2000 / - |" in text
    assert "| hybrid | fine-tuned + fusion + known queries | 0.2500 / - |" in text
    assert "are off) | 0.2500 / 0.1000 |" in text  # the default pipeline row, per seed
    assert "default pipeline MRR@10 0.2500 / 0.1000" in text and "met for 1 of 2 seed(s)" in text
    assert "known queries w=0.6 k=2 top 20 (30 queries)" in text and "known queries off" in text


def test_report_counts_each_models_tuned_hybrid_as_a_first_stage(tmp_path):
    """korquad (issue 13): the hybrid weights a model tuned on validation make a first stage of
    their own; the target is that stage or better + 0.04, and at least 0.95."""
    import quality

    first = {n: {"MRR@10": 0.90, "NDCG@10": 0.9, "R@1": 0.8, "R@10": 0.99, "seconds": 1.0}
             for n in quality.FIRST_STAGES}
    d = _prepared_task(tmp_path / "korquad", first)
    row = _eval_row

    m1, m2 = "w/models/seed1", "w/models/seed2"
    rows = [row("hybrid (top 50)", 0.90), row(f"hybrid w=0.9 k=60, {m1}'s (top 50)", 0.93), row(f"+ {m1}", 0.96),
            row(f"+ {m1}, fused w=0.8 k=60 top 10", 0.975),
            row(f"hybrid w=0.8 k=60, {m2}'s (top 50)", 0.92), row(f"+ {m2}", 0.95),
            row(f"+ {m2}, fused w=1 k=60 top 10", 0.96)]
    train = {"steps": 10, "device": "cpu"}
    (d / "rerank.json").write_text(json.dumps({
        "seeds": [1, 2], "models": [m1, m2], "device": "CPU",
        "train": {f"seed{s}": {"seconds": 1, "train": train, "base_model": quality.BASE, "fusion": None,
                               "known_queries": None} for s in (1, 2)},
        "reranked": {"hybrid": {"rows": rows}}, "incomplete": "hybrid only"}))
    text = quality.report(tmp_path, ["korquad"])
    assert "| hybrid, weights tuned on validation (each seed's) | - | 0.9300 / 0.9200 |" in text
    assert "| bm25-kiwi | fine-tuned, fine-tuned + fusion | not run: hybrid only |" in text
    assert "best first stage hybrid (tuned) 0.9300 (target 0.9700): met for 1 of 2 seed(s)" in text
    assert "the un-fine-tuned base was not run" in text
    assert quality._target("korquad", 0.90) == 0.95 and quality._target("kornli", 0.90) == pytest.approx(0.93)


@pytest.mark.slow
def test_speed_bench_smoke_compares_every_backend_with_sentence_transformers(model_home, tiny_ce, tiny_encoder,
                                                                             data_dir, tmp_path):
    """bench/rerank_speed.py (issue 15) on tiny models and the fixture KorQuAD rows: every row it
    promises, ratios to the sentence-transformers baseline, fp32 backends without drift."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_RERANK_DATA": str(data_dir)}
    out_base = tmp_path / "speed"
    ce, enc = shutil.copytree(tiny_ce, tmp_path / "ce"), shutil.copytree(tiny_encoder, tmp_path / "enc")
    out = subprocess.run([sys.executable, str(BENCH.parent / "rerank_speed.py"), "--model", str(ce), "--encoder",
                          str(enc), "--queries", "4", "--depth", "3", "--max-length", "64", "--latency-docs", "3",
                          "--latency-repeat", "2", "--drift-queries", "4", "--out", str(out_base)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    result = json.loads(out_base.with_suffix(".json").read_text())
    # the OpenVINO "auto" row is named after the precision this CPU got
    auto = {"Reranker backend=openvino bf16", "Reranker backend=openvino fp32"}
    systems = [r["system"] for r in result["rerank"]]
    assert systems[:5] == [
        "sentence-transformers CrossEncoder.predict (fp32, batch 32)", "Reranker backend=torch fp32",
        "Reranker backend=torch bf16", "Reranker backend=onnx fp32", "Reranker backend=onnx int8"]
    assert systems[5] in auto and systems[6] == "Reranker backend=openvino fp32"
    encoders = [r["system"] for r in result["encode"]]
    assert encoders[0].startswith("sentence-transformers") and encoders[5] in {s.replace("Reranker", "BiEncoder")
                                                                               for s in auto}
    assert len(encoders) == 7 and all(e.startswith("BiEncoder backend=") for e in encoders[1:])
    assert all(r["pairs"] == 12 and r["pairs_per_s"] > 0 for r in result["rerank"])
    assert result["encode"][3]["drift"] == 0  # fp32 ONNX embeds like sentence-transformers
    assert result["encode"][6]["drift"] == 0  # and so does fp32 OpenVINO
    drift = result["drift"]
    assert drift["queries"] == 4 and set(drift["systems"]) == {"onnx int8", systems[5].replace("Reranker backend=", "")}
    table = out_base.with_suffix(".md").read_text()
    assert "CPU (" in table and "| 1.00x |" in table and "vs ST" in table


def test_speed_table_ratios_are_against_the_mean_of_the_repeated_baseline():
    """GPU runs time sentence-transformers first and again last (device hosts differ run to run):
    every "vs ST" is against the mean of the two, and the table names both."""
    import rerank_speed

    def row(system, rate):
        return {"system": system, "pairs": 10, "pairs_per_s": rate, "latency_p50_ms": 1.0, "latency_p95_ms": 2.0,
                "latency_warm_p50_ms": None if system.startswith("sentence") else 0.5, "latency_warm_p95_ms": 0.75,
                "latency_questions": 2, "latency_questions_p50_ms": 1.5, "latency_questions_p95_ms": 2.5,
                "MRR@10": 0.5, "drift": 0.0, "score_corr": 1.0, "pairs_per_s_one_query_a_call": rate, "load_s": 1.0}

    st = "sentence-transformers CrossEncoder.predict (fp32, batch 32)"
    result = {"machine": "NVIDIA H200", "queries": 2, "depth": 5, "distinct_passages": 10, "max_length": 512,
              "model": "m", "latency_docs": 5,
              "rerank": [row(st, 1000.0), row("Reranker defaults", 9000.0), row(st + ", again last", 1250.0)]}
    table = rerank_speed.table(result)
    assert "mean of the 2 ST fp32 runs (1000, 1250 pairs/s)" in table
    assert "| Reranker defaults | NVIDIA H200 | 9000.0 | 8.00x | 1.0 / 2.0 | 1.5 / 2.5 | 0.5 / 0.8 |" in table  # 9000 / 1125
    assert f"| {st} | NVIDIA H200 | 1000.0 | 0.89x | 1.0 / 2.0 | 1.5 / 2.5 | - |" in table  # no token cache to warm
    assert "1 x 5, 2 questions' calls" in table
    single = dict(result, rerank=result["rerank"][:2])
    assert "| Reranker defaults | NVIDIA H200 | 9000.0 | 9.00x |" in rerank_speed.table(single)


def test_heldout_bench_pages_and_the_safe_choice():
    """bench/heldout.py: pages keep an article's paragraphs in order under a heading, each paragraph on one
    page; the choice takes the setting whose worst gain over the best first stage is highest."""
    import heldout
    from rag_rerank.retrieval.fusion import Fusion

    paras = [{"context": "가" * 500}, {"context": "나" * 400}, {"context": "다" * 100}, {"context": "라" * 900}]
    pages, where = heldout._pages([{"title": "제목_하나", "paragraphs": paras}])
    assert pages[0].startswith("제목 하나 (1/2)\n") and where == {"가" * 500: 0, "나" * 400: 0, "다" * 100: 1, "라" * 900: 1}
    tasks = {"a": {"positives": [[0]] * 4, "best_first": 1.0}, "b": {"positives": [[0]] * 4, "best_first": 0.5}}
    bold, safe = ("s", Fusion(1.0)), ("s", Fusion(0.3, method="score"))
    values = {("a", *bold): 0.90, ("b", *bold): 0.80, ("a", *safe): 1.0, ("b", *safe): 0.52}
    table = heldout.Table(tasks)
    table.cache = {(n, st, f, "default"): v for (n, st, f), v in values.items()}
    assert heldout.choose(table, ["a", "b"], [bold, safe]) == safe  # bold gains more on b but loses 0.1 on a


def test_heldout_ocr_pages_are_seeded_imitations_of_a_scanned_page():
    """bench/heldout.py's OCR'd pages: the same seed gives the same page; header and page footer added, lines
    broken, the page's numbers gathered into a flattened table, and the text itself still there (a few
    spaces lost or added, a few look-alike characters swapped)."""
    import heldout

    body = ("1868년 4월 11일 에도 성 무혈 개성을 한 이후 신정부 군에게 양도가 약속되어 있었다. " * 6).strip()
    page = f"반류마루 (1/2)\n{body}"
    one, again, other = heldout._ocr(page, 1, 2, seed=3), heldout._ocr(page, 1, 2, seed=3), heldout._ocr(page, 1, 2, seed=4)
    assert one == again and one != other
    lines = one.split("\n")
    assert lines[0] == "반류마루 보고서" and lines[-1] == "- 1 / 2 -"
    assert "구분 | 항목 | 수치" in lines and "1868 | 4 | 11" in lines
    text = [line for line in lines[1:-1] if "|" not in line]
    assert len(text) > 5 and max(map(len, text)) <= 61  # broken into lines of 30-55 (+-5) characters
    squeezed = "".join("".join(text).split())
    assert abs(len(squeezed) - len("".join(body.split()))) <= 2 and squeezed[:7] == "1868년4월"
    assert sum(a != b for a, b in zip(squeezed, "".join(body.split()))) <= 6  # a few look-alikes misread


def test_serve_load_bench_free_mode_measures_the_service_alone(tiny_ce, unused_port, tmp_path):
    """bench/serve_load.py --free: the real serve() with a reranker that costs nothing, closed and open loop,
    every request answered; the tables and JSON written."""
    import serve_load

    out = tmp_path / "free"
    assert serve_load.main(["--free", str(tiny_ce), "--requests", "120", "--concurrency", "8", "--wait-ms", "5",
                            "--workers", "1", "--rate-fraction", "0.5", "--port", str(unused_port),
                            "--warm-up", "30", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    (row,) = result["rows"]
    assert row["requests"] == 120 and row["errors"] == 0 and row["requests_per_s"] > 0
    assert result["steady"]["errors"] == 0 and result["warm_up_requests"] == 30
    assert row["cuda_graphs"] == [0.0, 0.0]  # the server's gauge, scraped after the warm-up and the timed run
    # the batcher's calls counted for each phase alone (not the warm-up's): every timed request, in batches
    assert row["scored_requests"] == 120 and 1 <= row["requests_per_scoring_call"] <= 8
    assert result["steady"]["scored_requests"] == 120 and result["steady"]["requests_per_scoring_call"] >= 1
    assert "FreeReranker" in out.with_suffix(".md").read_text() and "after 30 other requests" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_serve_load_bench_compares_a_shared_scorer_with_a_model_a_worker(tiny_ce, unused_port, tmp_path):
    """bench/serve_load.py --workers 2 --scorer per-worker shared: the real serve command both ways in one run,
    every request answered, the table naming which row is which."""
    import serve_load

    out = tmp_path / "scorer"
    assert serve_load.main(["--reranker", str(tiny_ce), "--device", "cpu", "--workers", "2", "--scorer", "per-worker",
                            "shared", "--docs", "4", "--requests", "60", "--concurrency", "8", "--wait-ms", "2",
                            "--rate-fraction", "0", "--warm-up", "10", "--port", str(unused_port),
                            "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["scorer"] for r in result["rows"]] == ["per-worker", "shared"]
    assert all(r["requests"] == 60 and r["errors"] == 0 for r in result["rows"])
    # both workers' batchers read (one connection each: /health's pid and /metrics from one worker)
    assert [r["scored_requests"] for r in result["rows"]] == [60, 60]
    assert result["in_process"]["pairs_per_s"] > 0
    assert "| 2, shared |" in out.with_suffix(".md").read_text()
