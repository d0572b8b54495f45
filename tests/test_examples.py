"""The examples run offline on a fresh clone and print reranked Korean results.

Each runs as ``python examples/SCRIPT`` would (``__main__``, its own arguments, its folder on the
path, no model hub), inside this interpreter: the test pays for the example's work, not for a
second torch import.
"""
from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.slow


def run_example(script: str, *args: str, monkeypatch, data_dir: Path) -> str:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RAG_RERANK_DATA", str(data_dir))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.delitem(sys.modules, "_common", raising=False)  # read RAG_RERANK_DATA afresh
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return out.getvalue()


@pytest.mark.parametrize("script", ["llama_index_query_engine.py", "langchain_chain.py"])
def test_example_runs_offline(script, model_home, e5_cross_encoder, data_dir, tmp_path, monkeypatch):
    stdout = run_example(script, "--store", str(tmp_path / "store"), monkeypatch=monkeypatch, data_dir=data_dir)
    lines = stdout.splitlines()
    # The reranked first passage for each question is the one that answers it.
    firsts = [lines[i + 1 + ("답변" in lines[i + 1])] for i, line in enumerate(lines) if line.startswith("질문")]
    assert "세종대왕" in firsts[0] and "김치" in firsts[1] and "제주도" in firsts[2], stdout
    assert "(a" in lines[-1] and "세종대왕" in lines[-1]


def test_train_korsts_example(tiny_ce, data_dir, tmp_path, monkeypatch):
    stdout = run_example("train_korsts.py", "--base", str(tiny_ce), "--max-steps", "3", "--batch-size", "16",
                         "--output", str(tmp_path / "m"), "--test-limit", "200", monkeypatch=monkeypatch,
                         data_dir=data_dir)
    line = stdout.strip().splitlines()[-1]
    assert line.startswith("KorSTS test Spearman (200 pairs): before ") and "-> after" in line
    assert (tmp_path / "m" / "report.md").exists()
