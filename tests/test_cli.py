"""The `rag-rerank` console script."""
from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "rag_rerank.cli", *args], capture_output=True,
                          text=True, input=stdin, timeout=600)


def test_public_imports():
    out = subprocess.run([sys.executable, "-c",
                          "from rag_rerank import Reranker; from rag_rerank.models import materialize"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_rerank_command_json(tiny_ce):
    out = run_cli("rerank", "서울 날씨", "--model", str(tiny_ce), "--json", stdin="오늘 서울은 맑다\n부산은 비\n")
    assert out.returncode == 0, out.stderr
    ranked = json.loads(out.stdout)
    assert sorted(r["index"] for r in ranked) == [0, 1]
    assert ranked[0]["score"] >= ranked[1]["score"]


def test_missing_model_is_a_clean_error():
    out = run_cli("rerank", "질문", "문서", "--model", "./nope/model")
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_materialize_command(model_home, e5_dir):
    out = run_cli("materialize")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(e5_dir)
