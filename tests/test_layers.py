"""The package's layers: what importing costs, and which module may import which.

Data flows one way - first stage -> reranker -> fusion -> retriever - and the cheap entry points
(``import rag_rerank``, the types a caller validates with, ``rag-rerank --help``) load no torch.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rag_rerank"


def _loads_torch(code: str) -> tuple[bool, str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True", out.stdout


@pytest.mark.parametrize("code", [
    "import rag_rerank",
    "import rag_rerank.types",
    "from rag_rerank.types import Document, Hit, check_query",
    "from rag_rerank import fusion, model_settings, first_stage, evaluate",
    "import rag_rerank.train; from rag_rerank.train import TrainConfig, load",
    "from rag_rerank.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from rag_rerank.cli import main\ntry:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass",
])
def test_cheap_entry_points_load_no_torch(code):
    loaded, output = _loads_torch(code)
    assert not loaded, output


def test_console_script_help_loads_no_torch():
    code = ("import runpy, sys\nsys.argv = ['rag-rerank', '--help']\ntry:\n"
            "    runpy.run_module('rag_rerank.cli', run_name='__main__')\nexcept SystemExit:\n    pass")
    loaded, output = _loads_torch(code)
    assert "usage: rag-rerank" in output and not loaded


def test_lazy_names_resolve_to_the_real_objects():
    import rag_rerank
    from rag_rerank.retrieval.pipeline import TwoStageRetriever
    from rag_rerank.types import Document

    assert rag_rerank.TwoStageRetriever is TwoStageRetriever and rag_rerank.Document is Document
    assert set(rag_rerank.__all__) <= set(dir(rag_rerank))
    with pytest.raises(AttributeError):
        rag_rerank.NoSuchThing  # noqa: B018


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The rag_rerank modules a file imports at run time, at the top or inside a function
    (``if TYPE_CHECKING:`` imports are annotations, not arrows)."""
    module = "rag_rerank." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test).endswith("TYPE_CHECKING") for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names} & modules
            out |= submodules or {target}  # `from . import fusion` is an arrow to fusion, not to the package
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out & modules


def _graph() -> dict[str, set[str]]:
    paths = {"rag_rerank." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
    paths = {name.removesuffix(".__init__"): p for name, p in paths.items()}
    return {m: _imports(p, set(paths)) - {m} for m, p in paths.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.mark.parametrize("module", ["rag_rerank.retrieval.first_stage", "rag_rerank.retrieval.store",
                                    "rag_rerank.retrieval.encoder", "rag_rerank.retrieval.lexical",
                                    "rag_rerank.retrieval.lexical_index", "rag_rerank.types", "rag_rerank.retrieval.fusion",
                                    "rag_rerank.models.settings", "rag_rerank.retrieval.known_queries"])
def test_no_arrow_from_the_first_stage_or_fusion_to_the_reranker(module):
    assert not [m for m in _reachable(_graph(), module) if m.startswith("rag_rerank.reranker")]


def test_the_reranker_imports_no_later_stage():
    graph = _graph()
    reranker = [m for m in graph if m.startswith("rag_rerank.reranker")]
    reached = set().union(*(_reachable(graph, m) for m in reranker))
    later = {m for m in graph if m.startswith("rag_rerank.retrieval")} | {"rag_rerank.evaluate", "rag_rerank.models.settings"}
    assert reranker and not reached & later


def test_the_folders_show_the_layers_and_the_old_paths_still_import():
    """Top level: the shared types, the entry points and one folder a layer (retrieval/, reranker/, models/,
    train/); the modules' first homes (rag_rerank.store, rag_rerank.fusion, ...) answer with the same module."""
    import importlib

    import rag_rerank

    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "_lazy", "cli", "demo", "evaluate", "serve", "types"]
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == {
        "retrieval", "reranker", "models", "train", "integrations", "testing"}
    for old, new in rag_rerank.MOVED.items():
        assert importlib.import_module(f"rag_rerank.{old}") is importlib.import_module(f"rag_rerank.{new}"), old
    from rag_rerank import fusion, model_settings
    from rag_rerank.store import ChromaStore

    assert (fusion.__name__, model_settings.__name__) == ("rag_rerank.retrieval.fusion", "rag_rerank.models.settings")
    assert ChromaStore is rag_rerank.ChromaStore
    # an attribute of the package, in a process that never imported the module (test order must not matter)
    code = ("import sys, rag_rerank; m = rag_rerank.fusion; assert m is sys.modules['rag_rerank.retrieval.fusion']; "
            "assert rag_rerank.model_settings.__name__ == 'rag_rerank.models.settings'")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_core_imports_no_framework():
    for path in PACKAGE.rglob("*.py"):
        if "integrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {n for n in names if n.startswith(("llama_index", "langchain"))}, path


def test_integrations_are_their_own_packages_named_like_their_ecosystems():
    """integrations/: one installable package per framework, depending on the core; LlamaIndex's
    modules live in the shared llama_index namespace (no __init__.py above <kind>/rag_rerank),
    LangChain's is a partner-style langchain_<name> package. rag_rerank.integrations re-exports them."""
    import tomllib

    from langchain_rag_rerank import KoreanCrossEncoderReranker
    from llama_index.embeddings.rag_rerank import KoreanEmbedding
    from llama_index.postprocessor.rag_rerank import KoreanReranker
    from llama_index.retrievers.rag_rerank import ChromaBiEncoderRetriever

    from rag_rerank.integrations import langchain, llama_index

    root = PACKAGE.parent / "integrations"
    for folder, kinds in (("llama-index-rag-rerank", ["postprocessor", "retrievers", "embeddings"]),
                          ("langchain-rag-rerank", None)):
        project = tomllib.loads((root / folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        assert project["name"] == folder and any(d.startswith("rag-rerank") for d in project["dependencies"])
        if kinds:
            base = root / folder / "llama_index"
            assert not (base / "__init__.py").exists() and all(
                (base / kind / "rag_rerank" / "__init__.py").exists() and not (base / kind / "__init__.py").exists()
                for kind in kinds)
    assert (llama_index.KoreanReranker, llama_index.ChromaBiEncoderRetriever, llama_index.KoreanEmbedding) == \
        (KoreanReranker, ChromaBiEncoderRetriever, KoreanEmbedding)
    assert langchain.KoreanCrossEncoderReranker is KoreanCrossEncoderReranker


def test_fusion_is_arithmetic_and_no_layer_reaches_back_into_training():
    """fusion calls no model (the second stage that scores and fuses is pipeline.rerank_fused), and the
    inference layers take their shared types from types, not from train/ (only the CLI drives training)."""
    graph = _graph()
    assert not {"rag_rerank.reranker", "rag_rerank.retrieval.pipeline"} & _reachable(graph, "rag_rerank.retrieval.fusion")
    inference = [m for m in graph if not m.startswith(("rag_rerank.train", "rag_rerank.cli", "rag_rerank.integrations"))
                 and m != "rag_rerank"]
    assert not [m for m in inference if any(d.startswith("rag_rerank.train") for d in graph[m])]
    evaluate = (PACKAGE / "evaluate.py").read_text(encoding="utf-8")
    assert "train" not in "".join(line for line in evaluate.splitlines() if "import" in line)
