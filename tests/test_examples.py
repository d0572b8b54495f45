"""The examples run offline on a fresh clone and print reranked Korean results."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["llama_index_query_engine.py", "langchain_chain.py"])
def test_example_runs_offline(script, model_home, e5_dir, data_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_RERANK_DATA": str(data_dir)}
    out = subprocess.run([sys.executable, str(EXAMPLES / script), "--store", str(tmp_path / "store")],
                         capture_output=True, text=True, timeout=900, env=env, cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    # The reranked first passage for each question is the one that answers it.
    firsts = [lines[i + 1 + ("답변" in lines[i + 1])] for i, line in enumerate(lines) if line.startswith("질문")]
    assert "세종대왕" in firsts[0] and "김치" in firsts[1] and "제주도" in firsts[2], out.stdout
    assert "(a" in lines[-1] and "세종대왕" in lines[-1]


def test_train_korsts_example(tiny_ce, data_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_RERANK_DATA": str(data_dir)}
    out = subprocess.run([sys.executable, str(EXAMPLES / "train_korsts.py"), "--base", str(tiny_ce),
                          "--max-steps", "3", "--batch-size", "16", "--output", str(tmp_path / "m"),
                          "--test-limit", "200"], capture_output=True, text=True, timeout=900, env=env, cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("KorSTS test Spearman (200 pairs): before ") and "-> after" in line
    assert (tmp_path / "m" / "report.md").exists()
